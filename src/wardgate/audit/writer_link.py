"""The wire between the gateway and its audit writer process (audit.writer: process).

Theory of operation: both ends are wardgate's own processes over one `socketpair`, made
by the gateway before it starts the writer, so nothing else can speak on it. A frame is a
4-byte big-endian length and a pickled tuple; pickle is used because both ends are the
same program and it is the cheapest encoding CPython has for small tuples of str, dict
and bytes (it never carries input from outside: event fields are values, not objects).

Gateway -> writer:  ("append", [(rid, kind, fields), ...])   ("close",)
Writer -> gateway:  ("ready", size)   ("failed", message)
                    ("done", [(rid, seq, time, payload_hash, body), ...])
                    ("error", [(rid, exception name, message), ...])
                    ("bye",)

Each side writes at most one frame per event-loop turn: requests (or replies) made in the
same turn travel together, so a batch of sessions costs one write and one wake-up.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

__all__ = ["FrameReader", "encode", "HEADER"]

HEADER = 4
_MAX_FRAME = 1 << 30  # a frame this large is a bug on the other side, not a batch
_dumps = pickle.dumps
_loads = pickle.loads
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def encode(message: tuple[Any, ...]) -> bytes:
    body = _dumps(message, _PROTOCOL)
    return len(body).to_bytes(HEADER, "big") + body


class FrameReader:
    """Splits a byte stream into frames and hands each decoded message to `on_message`."""

    __slots__ = ("_buf", "_on_message")

    def __init__(self, on_message: Callable[[tuple[Any, ...]], None]) -> None:
        self._buf = bytearray()
        self._on_message = on_message

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        end = len(buf)
        while end - start >= HEADER:
            n = int.from_bytes(buf[start : start + HEADER], "big")
            if n > _MAX_FRAME:
                raise ValueError(f"audit writer link: frame of {n} bytes")
            if end - start - HEADER < n:
                break
            body = bytes(buf[start + HEADER : start + HEADER + n])
            start += HEADER + n
            self._on_message(_loads(body))
        if start:
            del buf[:start]
