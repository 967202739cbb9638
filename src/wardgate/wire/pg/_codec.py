"""Shared low-level readers and packers for the PostgreSQL codec (private).

Theory of operation: a decoder walks a message body with an integer offset. Every read
checks bounds and raises ``ProtocolError`` on short or malformed input; the ``decoder``
decorator is a safety net that turns any other low-level exception into a
``ProtocolError`` naming the message, so callers only ever see one exception type.
Strings are C strings decoded as UTF-8 with surrogateescape (lossless both ways).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from wardgate.wire.pg.framing import ProtocolError

__all__ = [
    "ENCODING",
    "ERRORS",
    "as_bytes",
    "decoder",
    "read_cstr",
    "read_i16",
    "read_u16",
    "read_i32",
    "read_u32",
    "read_i16_array",
    "read_u32_array",
    "read_values",
    "expect_end",
    "cstr",
    "pack_i16",
    "pack_i32",
    "pack_u32",
    "frame",
]

ENCODING = "utf-8"
ERRORS = "surrogateescape"

_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_i16_from = _I16.unpack_from
_u16_from = _U16.unpack_from
_i32_from = _I32.unpack_from
_u32_from = _U32.unpack_from

P = ParamSpec("P")
R = TypeVar("R")


def as_bytes(body: bytes | bytearray | memoryview) -> bytes:
    return body if type(body) is bytes else bytes(body)


def decoder(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a decoder so that it raises only ``ProtocolError``."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except ProtocolError:
                raise
            except (struct.error, IndexError, ValueError, TypeError, UnicodeError) as exc:
                raise ProtocolError(f"malformed {name} message") from exc

        return inner

    return wrap


def _short(pos: int, need: int, body: bytes) -> ProtocolError:
    return ProtocolError(
        f"message too short: needed {need} bytes at offset {pos}, {len(body) - pos} left"
    )


def read_cstr(body: bytes, pos: int) -> tuple[str, int]:
    end = body.find(b"\0", pos)
    if end < 0:
        raise ProtocolError(f"unterminated string at offset {pos}")
    return body[pos:end].decode(ENCODING, ERRORS), end + 1


def read_i16(body: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(body):
        raise _short(pos, 2, body)
    return _i16_from(body, pos)[0], pos + 2


def read_u16(body: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(body):
        raise _short(pos, 2, body)
    return _u16_from(body, pos)[0], pos + 2


def read_i32(body: bytes, pos: int) -> tuple[int, int]:
    if pos + 4 > len(body):
        raise _short(pos, 4, body)
    return _i32_from(body, pos)[0], pos + 4


def read_u32(body: bytes, pos: int) -> tuple[int, int]:
    if pos + 4 > len(body):
        raise _short(pos, 4, body)
    return _u32_from(body, pos)[0], pos + 4


def read_i16_array(body: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """A UInt16 count followed by that many Int16 values."""
    n, pos = read_u16(body, pos)
    end = pos + 2 * n
    if end > len(body):
        raise _short(pos, 2 * n, body)
    return struct.unpack_from(f"!{n}h", body, pos), end


def read_u32_array(body: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """A UInt16 count followed by that many UInt32 values (OIDs)."""
    n, pos = read_u16(body, pos)
    end = pos + 4 * n
    if end > len(body):
        raise _short(pos, 4 * n, body)
    return struct.unpack_from(f"!{n}I", body, pos), end


def read_values(body: bytes, pos: int) -> tuple[tuple[bytes | None, ...], int]:
    """A UInt16 count followed by (Int32 length, bytes) values; length -1 is NULL."""
    n, pos = read_u16(body, pos)
    size = len(body)
    out: list[bytes | None] = []
    append = out.append
    for _ in range(n):
        if pos + 4 > size:
            raise _short(pos, 4, body)
        (length,) = _i32_from(body, pos)
        pos += 4
        if length < 0:
            if length != -1:
                raise ProtocolError(f"invalid value length {length}")
            append(None)
            continue
        end = pos + length
        if end > size:
            raise _short(pos, length, body)
        append(body[pos:end])
        pos = end
    return tuple(out), pos


def expect_end(body: bytes, pos: int, what: str) -> None:
    if pos != len(body):
        raise ProtocolError(f"{what} message has {len(body) - pos} unexpected trailing bytes")


# -- packing -------------------------------------------------------------------------------


def cstr(value: str | bytes) -> bytes:
    data = value if isinstance(value, bytes) else value.encode(ENCODING, ERRORS)
    if b"\0" in data:
        raise ValueError("a protocol string cannot contain a NUL byte")
    return data + b"\0"


pack_i16 = _I16.pack
pack_i32 = _I32.pack
pack_u32 = _U32.pack
_frame_head = struct.Struct("!cI").pack


def frame(type_byte: bytes, body: bytes) -> bytes:
    """One typed message: type byte, Int32 length (counting itself), body."""
    return _frame_head(type_byte, len(body) + 4) + body
