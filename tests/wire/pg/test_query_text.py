"""`query_text`, the hot path's Query decoder, agrees with `decode_query` on every body."""

from __future__ import annotations

import pytest

from wardgate.wire.pg import frontend as f
from wardgate.wire.pg.framing import ProtocolError


@pytest.mark.parametrize(
    "body",
    [
        b"SELECT 1\0",
        b"\0",
        "SELECT 'caf\u00e9', '\u2603'\0".encode(),
        b"SELECT '\xff\xfe'\0",  # not UTF-8: surrogate-escaped as decode_query does
        bytearray(b"SELECT 2\0"),
        memoryview(b"SELECT 3\0"),
    ],
)
def test_same_text_as_decode_query(body: bytes) -> None:
    assert f.query_text(body) == f.decode_query(body).sql


@pytest.mark.parametrize(
    "body",
    [b"", b"SELECT 1", b"SELECT 1\0; DROP TABLE x\0", b"\0\0", b"SELECT\0 1"],
)
def test_malformed_bodies_raise_as_decode_query_does(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        f.decode_query(body)
    with pytest.raises(ProtocolError):
        f.query_text(body)
