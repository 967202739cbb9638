"""Message framing for the PostgreSQL 3.0 wire protocol, sans-IO.

Theory of operation
-------------------
A PostgreSQL stream is a sequence of messages. A typed message is one type byte, an
Int32 length that counts itself and the body (not the type byte), then the body. The very
first packet a client sends (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) has
no type byte: just the Int32 length and the body.

``MessageReader`` keeps what it was fed and hands out whole messages only. Its buffer is an
immutable ``bytes`` object plus a read offset, so each message's ``raw`` is a single slice
(one copy) and the body is a slice of the same buffer. Fed chunks are parked in a list and
joined into the buffer only when the bytes already there cannot complete the next message
*and* the parked bytes can: a 64 MiB message arriving in 64 KiB chunks is therefore joined
once, not 1000 times (no quadratic copying), while the common case (one recv() holding many
whole messages) costs one join per feed.

Errors are sticky: once a length field is impossible the stream cannot be resynchronised,
so every later call raises the same ``ProtocolError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from wardgate.wire.pg.constants import UNTYPED

__all__ = [
    "ProtocolError",
    "MessageReader",
    "split_messages",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_STARTUP_PACKET_SIZE",
]

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
# PostgreSQL's own MAX_STARTUP_PACKET_LENGTH.
MAX_STARTUP_PACKET_SIZE = 10000
MIN_STARTUP_PACKET_SIZE = 8

_unpack_u32 = struct.Struct("!I").unpack_from


class ProtocolError(Exception):
    """The peer sent something that is not valid PostgreSQL protocol.

    The message never carries more than 32 bytes of the offending payload (use
    ``preview()``), so secrets in a malformed packet do not end up in logs.
    """


def preview(data: bytes | bytearray | memoryview, limit: int = 32) -> str:
    """A short, printable preview of ``data`` for error texts."""
    head = bytes(data[:limit])
    more = "..." if len(data) > limit else ""
    return f"{head!r}{more}"


class MessageReader:
    """Keeps received chunks; hands out whole messages only when complete."""

    __slots__ = (
        "_buf",
        "_pos",
        "_chunks",
        "_chunks_len",
        "_startup",
        "_max",
        "_error",
    )

    def __init__(
        self, *, startup: bool = False, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        self._buf: bytes = b""
        self._pos: int = 0
        self._chunks: list[bytes] = []
        self._chunks_len: int = 0
        self._startup: bool = startup
        self._max: int = max_message_size
        self._error: ProtocolError | None = None

    # -- input ------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes. Empty input is ignored (EOF is the caller's business)."""
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._chunks.append(data)
        self._chunks_len += len(data)

    def expect_startup(self) -> None:
        """The next message is an untyped startup packet (after an SSL/GSSENC refusal)."""
        self._startup = True

    @property
    def expecting_startup(self) -> bool:
        return self._startup

    @property
    def buffered(self) -> int:
        """Bytes held but not yet returned as messages."""
        return len(self._buf) - self._pos + self._chunks_len

    # -- output -----------------------------------------------------------------------
    def _join(self) -> None:
        buf, pos, chunks = self._buf, self._pos, self._chunks
        if pos >= len(buf) and len(chunks) == 1:
            self._buf = chunks[0]
        elif pos >= len(buf):
            self._buf = b"".join(chunks)
        else:
            self._buf = b"".join([memoryview(buf)[pos:], *chunks])
        self._pos = 0
        self._chunks = []
        self._chunks_len = 0

    def _fail(self, text: str) -> ProtocolError:
        self._error = ProtocolError(text)
        return self._error

    def next_message(self) -> tuple[int, bytes, bytes] | None:
        """The next complete message as ``(type_byte, body, raw)``, or None if incomplete.

        ``type_byte`` is 0 (``UNTYPED``) for an untyped startup packet. ``raw`` is the whole
        message exactly as received (type byte, length, body); ``body`` excludes both. Both
        are ``bytes``.
        """
        buf = self._buf
        pos = self._pos
        have = len(buf) - pos
        # the common case first: a whole typed message in the buffer, length in range
        if have >= 5 and self._error is None and not self._startup:
            end = pos + 1 + _unpack_u32(buf, pos + 1)[0]
            if pos + 5 <= end <= len(buf) and end - pos - 1 <= self._max:
                self._pos = end
                return buf[pos], buf[pos + 5 : end], buf[pos:end]
        if self._error is not None:
            raise self._error
        if self._startup:
            if have < 4:
                if have + self._chunks_len < 4:
                    return None
                self._join()
                buf, pos = self._buf, 0
            (length,) = _unpack_u32(buf, pos)
            if length < MIN_STARTUP_PACKET_SIZE or length > MAX_STARTUP_PACKET_SIZE:
                raise self._fail(f"invalid startup packet length {length}")
            end = pos + length
            if end > len(buf):
                if len(buf) - pos + self._chunks_len < length:
                    return None
                self._join()
                buf, pos = self._buf, 0
                end = length
            self._pos = end
            self._startup = False
            raw = buf[pos:end]
            return UNTYPED, raw[4:], raw

        if have < 5:
            if have + self._chunks_len < 5:
                return None
            self._join()
            buf, pos = self._buf, 0
        (length,) = _unpack_u32(buf, pos + 1)
        if length < 4:
            raise self._fail(f"invalid message length {length} for type {buf[pos]:#04x}")
        if length > self._max:
            raise self._fail(
                f"message of type {buf[pos]:#04x} is {length} bytes, over the "
                f"{self._max}-byte limit"
            )
        end = pos + 1 + length
        if end > len(buf):
            if len(buf) - pos + self._chunks_len < length + 1:
                return None
            self._join()
            buf, pos = self._buf, 0
            end = 1 + length
        self._pos = end
        return buf[pos], buf[pos + 5 : end], buf[pos:end]

    def next_run(self, type_byte: int) -> tuple[bytes, int] | None:
        """Every complete message of type ``type_byte`` that comes next, as one slice.

        Returns ``(raw, count)``: ``raw`` is the ``count`` whole messages exactly as
        received, back to back (one slice of the buffer, no per-message object), or None
        when the next message is of another type or not complete yet (``next_message``
        then takes over). Lengths are checked as ``next_message`` checks them. This is
        how a relay forwards a long run of DataRows that need no change.
        """
        if self._error is not None:
            raise self._error
        if self._startup:
            return None
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            if not self._chunks or len(buf) > pos:
                return None
            self._join()
            buf, pos = self._buf, 0
        size = len(buf)
        start = pos
        count = 0
        limit = self._max
        while pos + 5 <= size and buf[pos] == type_byte:
            (length,) = _unpack_u32(buf, pos + 1)
            if length < 4 or length > limit:
                break  # next_message raises the error for it
            end = pos + 1 + length
            if end > size:
                break
            pos = end
            count += 1
        if count == 0:
            return None
        self._pos = pos
        return buf[start:pos], count

    def __iter__(self) -> Iterator[tuple[int, bytes, bytes]]:
        """Iterate over the complete messages currently buffered."""
        while (msg := self.next_message()) is not None:
            yield msg

    def drain_raw(self) -> list[tuple[int, bytes]]:
        """All complete messages currently buffered, as ``(type_byte, raw)``."""
        out: list[tuple[int, bytes]] = []
        while (msg := self.next_message()) is not None:
            out.append((msg[0], msg[2]))
        return out

    def take_remaining(self) -> bytes:
        """Remove and return every buffered byte (e.g. to hand the stream to TLS)."""
        if self._chunks:
            self._join()
        rest = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        return rest


def split_messages(
    data: bytes, *, startup: bool = False, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[list[tuple[int, bytes, bytes]], bytes]:
    """Split a byte string into complete messages and the incomplete tail."""
    reader = MessageReader(startup=startup, max_message_size=max_message_size)
    reader.feed(data)
    messages = list(reader)
    return messages, reader.take_remaining()
