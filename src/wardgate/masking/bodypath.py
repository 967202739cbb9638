"""The DataRow wire format: decode, encode, and the body path's walk and splice.

A DataRow body is an Int16 column count, then per column an Int32 length (-1:
NULL) and that many bytes. `decode_data_row` / `encode_data_row` convert it
to and from a list of values (the value path); the rest serves the body path.

Theory of operation: the body path (masker.py) masks a DataRow without
decoding it into values. It needs, per row, the offset of every value and a
scan buffer: the body with its count and length words (and the values of
skipped or ruled columns) turned into NUL bytes, so that every value keeps its
offset and NUL-separates from its neighbours. A Python loop over the columns
costs about fifty bytecodes per column, more than the scan itself; so for each
layout (which columns are blanked) a straight-line function is generated once
and cached: one `unpack_from` and two additions per column, one join.

The generated walk checks framing only as a whole (the last value ends at the
end of the body, no length below -1, no length word past the end): it returns
None for any malformed body, and the caller then takes the value path, whose
decoder raises the precise error. A well-formed body is accepted exactly when
the decoder accepts it.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Sequence

from wardgate.masking.errors import MaskingError

__all__ = ["Walk", "decode_data_row", "encode_data_row", "splice", "walker"]

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_ZERO4 = bytes(4)
_NULL_LEN = b"\xff\xff\xff\xff"
_MAX_UNROLLED = 64  # wider results use the loop (the generated code would be long)

Walk = Callable[[bytes], "tuple[bytes, Sequence[int], Sequence[int]] | None"]
_CACHE: dict[tuple[bool, ...], Walk] = {}


def walker(blank: Sequence[bool]) -> Walk:
    """`walk(body) -> (scan buffer, value starts, value ends)`, or None if malformed.

    `blank[k]`: column k's value is zeroed in the buffer (skipped or ruled).
    """
    key = tuple(bool(b) for b in blank)
    fn = _CACHE.get(key)
    if fn is None:
        fn = _generate(key) if len(key) <= _MAX_UNROLLED else _loop(key)
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = fn
    return fn


def _generate(blank: tuple[bool, ...]) -> Walk:
    n = len(blank)
    lines = ["def walk(body, u=u, z=z, error=error):", "    try:"]
    pos = "2"
    for k in range(n):
        lines.append(f"        (n{k},) = u(body, {pos})")
        lines.append(f"        s{k} = {pos} + 4")
        lines.append(f"        e{k} = s{k} + n{k} if n{k} > 0 else s{k}")
        pos = f"e{k}"
    lines.append("    except error:")
    lines.append("        return None")
    lengths = ", ".join(f"n{k}" for k in range(n))
    low = f"min({lengths})" if n > 1 else "n0"
    lines.append(f"    if {pos} != len(body) or {low} < -1:")
    lines.append("        return None")
    parts = ", ".join(
        ["b'\\x00\\x00'"]
        + [f"bytes(e{k} - s{k})" if blank[k] else f"body[s{k}:e{k}]" for k in range(n)]
    )
    starts = ", ".join(f"s{k}" for k in range(n))
    ends = ", ".join(f"e{k}" for k in range(n))
    lines.append(f"    return z.join(({parts},)), ({starts},), ({ends},)")
    namespace: dict = {"u": _I32.unpack_from, "z": _ZERO4, "error": struct.error}
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from column flags only
    return namespace["walk"]


def _loop(blank: tuple[bool, ...]) -> Walk:
    unpack = _I32.unpack_from

    def walk(body: bytes) -> tuple[bytes, list[int], list[int]] | None:
        size = len(body)
        starts: list[int] = []
        ends: list[int] = []
        parts: list[bytes] = [b"\x00\x00"]
        pos = 2
        try:
            for skip in blank:
                (n,) = unpack(body, pos)
                pos += 4
                starts.append(pos)
                if n > 0:
                    end = pos + n
                    parts.append(bytes(n) if skip else body[pos:end])
                    pos = end
                elif n < -1:
                    return None
                else:
                    parts.append(b"")
                ends.append(pos)
        except struct.error:
            return None
        if pos != size:
            return None
        return _ZERO4.join(parts), starts, ends

    return walk


def splice(
    body: bytes,
    found: Sequence[tuple[str, int, int]],
    starts: Sequence[int],
    ends: Sequence[int],
    replacers: dict[str, Callable[[bytes], bytes]],
    counts_all: list[dict[str, int]],
    null_on_finding: Sequence[bool],
    nulled: list[int],
) -> bytes:
    """The masked body: each value with findings rebuilt, the rest copied in stretches.

    `found` is sorted and not overlapping, in body offsets, and only in scanned
    columns; counts and nulled values are added to `counts_all` and `nulled`.
    """
    pack = _I32.pack
    out: list[bytes] = []
    copied = 0  # body[:copied] is in `out`
    vend = 0
    col = -1
    counts: dict[str, int] = {}
    pieces: list[bytes] = []
    last = 0
    for entity, s, e in found:
        if s >= vend:  # the first finding in another value
            if pieces:
                pieces.append(body[last:vend])
                value = b"".join(pieces)
                out.append(pack(len(value)))
                out.append(value)
                copied = vend
                pieces = []
            col = bisect_right(starts, s) - 1
            vstart = starts[col]
            vend = ends[col]
            counts = counts_all[col]
            out.append(body[copied : vstart - 4])
            if null_on_finding[col]:  # a masked span would not parse as the type
                out.append(_NULL_LEN)
                nulled[col] += 1
                copied = vend
                last = vend
            elif s == vstart and e == vend:  # the whole value (the common case)
                value = replacers[entity](body[s:e])
                out.append(pack(len(value)))
                out.append(value)
                copied = vend
            else:
                pieces.append(body[vstart:s])
                pieces.append(replacers[entity](body[s:e]))
                last = e
        elif last < vend:  # another finding in the same value
            pieces.append(body[last:s])
            pieces.append(replacers[entity](body[s:e]))
            last = e
        counts[entity] = counts.get(entity, 0) + 1
    if pieces:
        pieces.append(body[last:vend])
        value = b"".join(pieces)
        out.append(pack(len(value)))
        out.append(value)
        copied = vend
    out.append(body[copied:])
    return b"".join(out)


def _decode_data_row(body: bytes) -> list[bytes | None]:
    size = len(body)
    if size < 2:
        raise MaskingError("malformed DataRow: no column count")
    (count,) = _I16.unpack_from(body, 0)
    if count < 0:
        raise MaskingError("malformed DataRow: negative column count")
    pos = 2
    values: list[bytes | None] = []
    append = values.append
    unpack = _I32.unpack_from
    try:
        for _ in range(count):
            (n,) = unpack(body, pos)
            pos += 4
            if n < 0:
                if n != -1:
                    raise MaskingError("malformed DataRow: bad value length")
                append(None)
            else:
                end = pos + n
                if end > size:
                    raise MaskingError("malformed DataRow: value runs past the message")
                append(body[pos:end])
                pos = end
    except struct.error:
        raise MaskingError("malformed DataRow: truncated") from None
    if pos != size:
        raise MaskingError("malformed DataRow: trailing bytes")
    return values


def encode_data_row(values: Sequence[bytes | None]) -> bytes:
    """A DataRow body from values (None: SQL NULL)."""
    pack = _I32.pack
    return _I16.pack(len(values)) + b"".join(
        [_NULL_LEN if v is None else pack(len(v)) + v for v in values]
    )


def decode_data_row(body: bytes) -> list[bytes | None]:
    """The values of a DataRow body (MaskingError if malformed)."""
    return _decode_data_row(body)
