"""The wire between the gateway and its audit writer process (audit.writer: process).

Theory of operation: both ends are wardgate's own processes over one `socketpair`, made
by the gateway before it starts the writer, so nothing else can speak on it. A frame is a
4-byte big-endian length, one tag byte and the message: `M` for `marshal` (tuples of str,
int, bytes, None, lists and dicts: every frame the hot path sends, and the cheapest
encoding CPython has for them), `P` for pickle (a frame with a value marshal refuses, such
as a dict subclass in an event's meta; the writer then refuses that event as the store
would). Neither ever carries input from outside as code: event fields are values, and
both ends are the same program (marshal's format is the running Python's own).

Gateway -> writer:  ("append", [(rid, reply, kind, session, identity, connection,
                                 verdict, rule, meta, payload), ...])      ("close",)
                    reply: NO_REPLY (nobody waits: a result event), SEQ_REPLY (the
                    event's seq), RECORD_REPLY (what is needed to rebuild its record)
Writer -> gateway:  ("ready", size)   ("failed", message)   ("bye",)
                    ("done", time, [rid, seq, rid, seq, ...], [(rid, seq, payload_hash,
                             body), ...])   one per group commit: every event of it is
                             durable; seqs for SEQ_REPLY requests, records for the others
                    ("error", [(rid, exception name, message), ...])

Each side writes at most one frame per event-loop turn (the gateway) or per group commit
(the writer): a batch of sessions costs one write and one wake-up.
"""

from __future__ import annotations

import marshal
import pickle
from collections.abc import Callable
from typing import Any

__all__ = ["FrameReader", "encode", "HEADER", "NO_REPLY", "SEQ_REPLY", "RECORD_REPLY"]

HEADER = 4
NO_REPLY, SEQ_REPLY, RECORD_REPLY = 0, 1, 2
_MAX_FRAME = 1 << 30  # a frame this large is a bug on the other side, not a batch
_M, _P = ord("M"), ord("P")
_mdumps = marshal.dumps
_loads = {_M: marshal.loads, _P: pickle.loads}


def encode(message: tuple[Any, ...]) -> bytes:
    """One frame; marshal when it can, else pickle (TypeError if neither can)."""
    try:
        body = b"M" + _mdumps(message)
    except ValueError:  # a value marshal does not know
        try:
            body = b"P" + pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - one type for "cannot be sent"
            raise TypeError(f"audit writer link: cannot encode: {exc}") from exc
    return len(body).to_bytes(HEADER, "big") + body


class FrameReader:
    """Splits a byte stream into frames and hands each decoded message to `on_message`."""

    __slots__ = ("_buf", "_on_message")

    def __init__(self, on_message: Callable[[tuple[Any, ...]], None]) -> None:
        self._buf = bytearray()
        self._on_message = on_message

    def feed(self, data: bytes) -> None:
        if self._buf:
            self._buf += data
            data = bytes(self._buf)
            self._buf.clear()
        view = memoryview(data)
        pos = 0
        end = len(data)
        on_message = self._on_message
        while end - pos >= HEADER:
            n = int.from_bytes(view[pos : pos + HEADER], "big")
            if n > _MAX_FRAME or n < 1:
                raise ValueError(f"audit writer link: frame of {n} bytes")
            stop = pos + HEADER + n
            if stop > end:
                break
            loads = _loads.get(data[pos + HEADER])
            if loads is None:
                raise ValueError("audit writer link: unknown frame encoding")
            message = loads(view[pos + HEADER + 1 : stop])
            pos = stop
            on_message(message)
        if pos < end:
            self._buf += view[pos:]
