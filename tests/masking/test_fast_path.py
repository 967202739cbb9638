"""The fast path (per-result value cache) masks exactly what the reference paths mask.

Three ways to mask one row must agree on every value and every count: the
masker as the engine builds it (value cache on), the same masker with the cache
off (the whole row NUL-joined and scanned in one pass), and a per-value
reference that scans each value alone with `Scanner.spans`.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.masking import BASELINE_MASK, ColumnInfo, MaskingConfig, MaskingEngine
from wardgate.masking.masker import SCAN_NULL, SCAN_TEXT, ResultMasker, encode_data_row
from wardgate.pipeline.command import MaskDirective

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from pii_dataset import MIXED_COLUMNS, generate, mixed_rows  # noqa: E402

ENGINE = MaskingEngine(MaskingConfig(phone=True), token_key=b"k")
ALL = MaskDirective("test/all", entities=("*",), strategy="default")
NCOLS = 6
COLUMNS = [ColumnInfo(f"c{i}", "t", 25 if i != 4 else 1700, 0) for i in range(NCOLS)]


def reference(masker: ResultMasker, values: list[bytes | None]) -> list[bytes | None]:
    """Each value scanned alone, spans replaced: the semantics the fast path must keep."""
    out = list(values)
    for i, v in enumerate(values):
        mode = masker._scan_modes[i]
        if v is None or mode not in (SCAN_TEXT, SCAN_NULL):
            continue
        spans = masker._scanner.spans(v)
        if not spans:
            continue
        if mode == SCAN_NULL:
            out[i] = None
            continue
        pieces, last = [], 0
        for entity, s, e in spans:
            pieces += [v[last:s], masker._replacers[entity](v[s:e])]
            last = e
        out[i] = b"".join([*pieces, v[last:]])
    return out


def check_rows(directives, columns, rows) -> int:
    fast = ENGINE.plan(directives, columns)
    slow = ENGINE.plan(directives, columns)
    assert fast is not None and slow is not None
    assert fast._cache is not None
    slow._cache = None
    fast._native = slow._native = None  # the Python paths (test_native_path.py: the C one)
    changed = 0
    for values in rows:
        body = encode_data_row(values)
        a = fast.mask_data_row(body)
        b = slow.mask_data_row(body)
        assert a == b
        expected = reference(fast, values)
        assert fast.mask_values(values) == expected
        assert slow.mask_values(values) == expected
        changed += a != body
    summary_fast, summary_slow = fast.summary(), slow.summary()
    assert summary_fast == summary_slow
    return changed


def test_faker_dataset_sample_fast_equals_reference() -> None:
    samples = generate(per_type=60, seed=77)
    rng = random.Random(5)
    texts = [s.text.encode() for s in samples]
    # rows of sample texts, with repeats so that the cache is hit
    rows = []
    for _ in range(1200):
        rows.append([rng.choice(texts) if rng.random() < 0.9 else None for _ in range(NCOLS)])
    changed = check_rows([ALL], COLUMNS, rows)
    assert changed > 500


def test_mixed_rows_fast_equals_reference_with_and_without_repeats() -> None:
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    rows = mixed_rows(300, seed=3)
    assert check_rows([BASELINE_MASK], columns, rows + rows + rows) == 900


def test_cache_is_dropped_when_values_do_not_repeat_and_results_stay_equal() -> None:
    columns = [ColumnInfo("v", None, 25, 0)]
    masker = ENGINE.plan([BASELINE_MASK], columns)
    assert masker is not None and masker._cache is not None
    for i in range(3000):
        masker.mask_values([b"row %d mail u%d@example.com" % (i, i)])
    assert masker._cache is None
    assert masker.summary()["columns"] == {"v": {"EMAIL_ADDRESS": 3000}}


def test_custom_entities_bypass_the_cache() -> None:
    engine = MaskingEngine(
        MaskingConfig(custom=[{"name": "EMPLOYEE_ID", "regex": r"EMP-\d{6}"}])  # type: ignore[list-item]
    )
    masker = engine.plan([ALL], [ColumnInfo("v", None, 25, 0)])
    assert masker is not None and masker._cache is None
    assert masker.mask_values([b"EMP-123456"]) == [b"[EMPLOYEE_ID]"]


def test_truncated_private_key_masked_in_any_column() -> None:
    pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQ truncated"
    masker = ENGINE.plan([BASELINE_MASK], COLUMNS)
    out = masker.mask_values([pem, b"x", pem, None, b"1", b"y"])
    assert out[0] == out[2] == b"[PRIVATE_KEY]"


PIECES = [
    "4111 1111 1111 1111", "4111111111111111", "jane@example.com", "078-05-1120",
    "219-09-9999", "DE89 3704 0044 0532 0130 00", "password=hunter2", "AKIAIOSFODNN7EXAMPLE",
    "10.0.0.1", "::1", "(555) 123-4567", "-----BEGIN PRIVATE KEY-----\nabc", " ", "-", "@", ".",
    "1", "12", "x", "é", "\t", "'", '"', "=", ":", "ghp_" + "a" * 36, "eyJhbGciOi.eyJzdWIiOi.sig",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.none(),
                st.lists(st.sampled_from(PIECES), max_size=6).map(lambda p: "".join(p).encode()),
                st.binary(max_size=24).map(lambda b: b.replace(b"\x00", b"")),
            ),
            min_size=NCOLS,
            max_size=NCOLS,
        ),
        min_size=1,
        max_size=12,
    )
)
def test_property_fast_equals_reference(rows) -> None:
    check_rows([ALL], COLUMNS, rows + rows)
