"""The JSON the hot path spells out by hand (a recorded row's line, a command's
parameters) is byte for byte what the json module gives for the same values."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from wardgate.engines.postgres.results import _encode, _row_line, _text

_values = st.lists(st.one_of(st.none(), st.binary(max_size=12), st.text(max_size=8).map(
    lambda t: t.encode("utf-8", "surrogatepass"))), max_size=6)  # fmt: skip


@given(_values)
def test_a_row_line_is_what_the_encoder_gives(values: list[bytes | None]) -> None:
    assert _row_line(values) == _encode([_text(v) for v in values]).encode()


def test_a_row_line_of_awkward_values() -> None:
    values = [b'"q"\\', b"\x00\x1f\x7f", "é ☃ 𝄞".encode(), b"\xff\xfe", None, b""]
    assert _row_line(values) == json.dumps([_text(v) for v in values], ensure_ascii=False).encode()
    assert _row_line([]) == b"[]"
