"""Property tests: mask_data_row only ever raises MaskingError, and never lets out a
value a column rule covers or a card/email an entity scan covers."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.masking import BASELINE_MASK, ColumnInfo, MaskingConfig, MaskingEngine, MaskingError
from wardgate.masking.masker import UNSCANNED_OIDS, decode_data_row, encode_data_row
from wardgate.pipeline.command import MaskDirective

ENGINE = MaskingEngine(MaskingConfig(), token_key=b"k")
OIDS = [25, 1043, 23, 20, 1700, 114, 3802, 1009, 1184, 16, 0, 20000]
COLUMNS = [
    ColumnInfo(f"c{i}", "t", oid, fmt)
    for i, (oid, fmt) in enumerate((o, f) for o in OIDS for f in (0, 1))
]
RULE = MaskDirective("p/cols", columns=("t.c1", "c4", "*.c7", "c17"), strategy="token")
MASKER_DIRECTIVES = [BASELINE_MASK, RULE]
COVERED = {1, 4, 7, 17}

CARDS = [b"4111 1111 1111 1111", b"378282246310005", b"5555-5555-5555-4444"]
EMAILS = [b"alice@example.com", b"b.o+b@mail.example.org"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_masking_error(body: bytes) -> None:
    masker = ENGINE.plan(MASKER_DIRECTIVES, COLUMNS[:3])
    try:
        out = masker.mask_data_row(body)
    except MaskingError:
        return
    decode_data_row(out)  # whatever comes out is a well-formed DataRow


@st.composite
def rows(draw):
    values = []
    for col in COLUMNS:
        # bool, int4, timestamps... cannot hold text, and are not scanned
        kinds = (
            ["null", "bytes"]
            if col.type_oid in UNSCANNED_OIDS
            else ["null", "bytes", "card", "email", "text"]
        )
        kind = draw(st.sampled_from(kinds))
        if kind == "null":
            values.append(None)
        elif kind == "bytes":
            values.append(draw(st.binary(max_size=30)))
        else:
            filler = draw(st.text(alphabet="abc XYZ-_,.:;=", max_size=12)).encode()
            secret = draw(st.sampled_from(CARDS if kind == "card" else EMAILS))
            values.append(filler + b" " + secret + b" " + filler if kind != "text" else filler)
    return values


@settings(max_examples=300, deadline=None)
@given(rows())
def test_masked_rows_never_contain_covered_values(values) -> None:
    masker = ENGINE.plan(MASKER_DIRECTIVES, COLUMNS)
    body = encode_data_row(values)
    try:
        out = decode_data_row(masker.mask_data_row(body))
    except MaskingError:
        return  # strict: the row is refused, nothing leaks
    assert len(out) == len(values)
    for i, (before, after) in enumerate(zip(values, out, strict=True)):
        if before is None:
            assert after is None
            continue
        if i in COVERED:
            assert after is None or after != before
            if after is not None:
                assert before not in after or len(before) < 4
        if after is not None and COLUMNS[i].type_oid not in UNSCANNED_OIDS:
            for raw in CARDS + EMAILS:
                assert raw not in after


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=12))
def test_encode_decode_roundtrip(values) -> None:
    body = encode_data_row(values)
    assert decode_data_row(body) == values
    assert struct.unpack_from("!h", body)[0] == len(values)
