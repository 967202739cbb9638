"""`backend.command_tag`, the relay's shortcut to a CommandComplete tag, gives exactly what
`decode_command_complete(body).tag` gives, and raises the same ProtocolError for a body
the decoder refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardgate.wire.pg import backend as be
from wardgate.wire.pg.framing import ProtocolError


def _decoded(body: bytes) -> str | ProtocolError:
    try:
        return be.decode_command_complete(body).tag
    except ProtocolError as exc:
        return exc


def _fast(body: bytes | bytearray | memoryview) -> str | ProtocolError:
    try:
        return be.command_tag(body)
    except ProtocolError as exc:
        return exc


@pytest.mark.parametrize(
    "body",
    [
        b"SELECT 1\x00",
        b"INSERT 0 5\x00",
        b"\x00",
        b"caf\xc3\xa9 \xff\xfe\x00",  # not UTF-8: surrogate escapes, as the decoder does
        b"",  # no terminator at all
        b"SELECT 1",
        b"SELECT\x001\x00",  # trailing bytes after the string
        b"\x00\x00",
    ],
)
def test_same_tag_or_same_error(body: bytes) -> None:
    expected = _decoded(body)
    for given_body in (body, bytearray(body), memoryview(body)):
        got = _fast(given_body)
        if isinstance(expected, ProtocolError):
            assert isinstance(got, ProtocolError)
            assert str(got) == str(expected)
        else:
            assert got == expected


@given(st.binary(max_size=40))
def test_any_body(body: bytes) -> None:
    expected, got = _decoded(body), _fast(body)
    if isinstance(expected, ProtocolError):
        assert isinstance(got, ProtocolError) and str(got) == str(expected)
    else:
        assert got == expected
