"""The gateway <-> audit writer frames: whole messages out of any split of the stream."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardgate.audit.writer_link import FrameReader, encode

MESSAGES: list[tuple[Any, ...]] = [
    ("append", [(0, 1, "command", "s", "i", "c", "allow", "r", {"a": [1, "x"]}, b"SELECT 1")]),
    ("done", "2026-11-26T10:22:01.123456Z", [0, 7, 1, 8], [(2, 9, None, b"{}")]),
    ("append", [(-1, 0, "result", None, None, None, None, None, OrderedDict(n=1), None)]),
    ("bye",),
]


def _read(chunks: list[bytes]) -> list[tuple[Any, ...]]:
    got: list[tuple[Any, ...]] = []
    reader = FrameReader(got.append)
    for chunk in chunks:
        reader.feed(chunk)
    return got


def test_every_two_piece_split_and_one_byte_at_a_time() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    want = _read([stream])
    assert [m[0] for m in want] == ["append", "done", "append", "bye"]
    assert want[1] == MESSAGES[1]
    for cut in range(len(stream) + 1):
        assert _read([stream[:cut], stream[cut:]]) == want
    assert _read([stream[i : i + 1] for i in range(len(stream))]) == want


def test_a_value_marshal_refuses_goes_by_pickle_and_nothing_else_fails() -> None:
    frame = encode(MESSAGES[2])
    assert frame[4:5] == b"P"
    assert encode(MESSAGES[0])[4:5] == b"M"
    with pytest.raises(TypeError):
        encode(("append", [lambda: None]))


@given(st.binary(max_size=64))
def test_garbage_gives_a_clean_error_or_nothing(data: bytes) -> None:
    reader = FrameReader(lambda m: None)
    try:
        reader.feed(data)
    except (ValueError, EOFError, TypeError, IndexError, KeyError):
        pass
    except Exception as exc:  # noqa: BLE001 - pickle's own errors are fine too
        import pickle

        assert isinstance(exc, pickle.UnpicklingError | AttributeError | ImportError)
