"""bytea values are scanned as the bytes they hold: `SELECT email::bytea` cannot carry an
address out in hex (text format) or raw (binary format)."""

from __future__ import annotations

from wardgate.masking.baseline import BASELINE_MASK
from wardgate.masking.engine import MaskingConfig, MaskingEngine
from wardgate.masking.masker import ColumnInfo


def _masker(fmt: int):
    engine = MaskingEngine(MaskingConfig())
    return engine.plan(
        [BASELINE_MASK], [ColumnInfo("b", None, 17, fmt), ColumnInfo("t", None, 25, fmt)]
    )


def test_hex_bytea_with_an_email_becomes_null() -> None:
    m = _masker(0)
    value = b"\\x" + b"ann.lee@example.com".hex().encode()
    assert m.mask_values([value, b"plain"]) == [None, b"plain"]
    assert m.summary()["nulled"] == {"b": 1}


def test_binary_bytea_with_a_card_becomes_null_and_clean_bytes_pass() -> None:
    m = _masker(1)
    assert m.mask_values([b"card 4111111111111111", b"x"])[0] is None
    clean = [b"\x00\x01\x02 nothing", b"x"]
    assert m.mask_values(clean) == clean
