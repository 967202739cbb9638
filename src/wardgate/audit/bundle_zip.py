"""Deterministic zip files for evidence bundles: every byte is a function of the members.

Theory of operation: `write_zip` lays out members in the given order with fixed header
fields (no timestamps: 1980-01-01 00:00, no extra fields, no comments, raw deflate at a
fixed level), so the archive holds no byte that its members do not determine.
`read_zip` parses the central directory, takes each member's compressed bytes, lays the
archive out again with the same writer around those exact bytes, and requires the result
to equal the input byte for byte: a change to any header, name, size, CRC, padding or
trailing byte fails there. Each member is then inflated, and its length and CRC-32 must
match and the deflate stream must end exactly where the member ends. A deflate stream is
not unique (a few bits, e.g. in Huffman table headers, can change without changing the
output), so callers also hash each member's *stored* bytes (`ZipMember.stored`); members
that hold those hashes are written uncompressed (`deflate=False`), where stored bytes and
content are the same. Recompressing is never needed, so a verifier's zlib version does not
matter.
ZIP64 is not used: a bundle is limited to 4 GiB and 65,535 members.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ZipFormatError", "ZipMember", "prepare", "write_zip", "read_zip"]

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_SIG_LOCAL, _SIG_CENTRAL, _SIG_END = 0x04034B50, 0x02014B50, 0x06054B50
_VERSION = 20
_DEFLATE, _STORE = 8, 0
_DOS_TIME, _DOS_DATE = 0, (0 << 9) | (1 << 5) | 1  # 1980-01-01 00:00:00
_EXT_ATTR = 0o100644 << 16
_LEVEL = 6
_MAX = 0xFFFFFFFF


class ZipFormatError(ValueError):
    """The archive is not laid out exactly as `write_zip` would lay it out."""


@dataclass(frozen=True, slots=True)
class ZipMember:
    name: str
    data: bytes  # the content
    stored: bytes  # the bytes in the archive (deflated, or the content itself)
    method: int
    crc: int


def _compress(data: bytes) -> bytes:
    c = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _layout(members: Iterable[tuple[str, bytes, int, int, int]]) -> bytes:
    """Archive bytes from (name, stored bytes, method, crc32, content size) in order."""
    out: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for name, comp, method, crc, size in members:
        raw_name = name.encode("ascii")
        if len(comp) > _MAX or size > _MAX:
            raise ZipFormatError(f"member {name} too large for a bundle (4 GiB limit)")
        local = _LOCAL.pack(_SIG_LOCAL, _VERSION, 0, method, _DOS_TIME, _DOS_DATE,
                            crc, len(comp), size, len(raw_name), 0)  # fmt: skip
        central.append(
            _CENTRAL.pack(_SIG_CENTRAL, _VERSION, _VERSION, 0, method, _DOS_TIME, _DOS_DATE,
                          crc, len(comp), size, len(raw_name), 0, 0, 0, 0, _EXT_ATTR, offset)
            + raw_name
        )  # fmt: skip
        out += [local, raw_name, comp]
        offset += len(local) + len(raw_name) + len(comp)
    cd = b"".join(central)
    if offset > _MAX or len(central) > 0xFFFF:
        raise ZipFormatError("bundle too large (4 GiB / 65,535 members limit)")
    end = _END.pack(_SIG_END, 0, 0, len(central), len(central), len(cd), offset, 0)
    return b"".join(out) + cd + end


def prepare(name: str, data: bytes, *, deflate: bool = True) -> ZipMember:
    """A member ready to write: its content, and the bytes the archive will hold."""
    if not name.isascii() or not name or name.startswith("/") or ".." in name.split("/"):
        raise ZipFormatError(f"bad member name {name!r}")
    if deflate:
        return ZipMember(name, data, _compress(data), _DEFLATE, zlib.crc32(data))
    return ZipMember(name, data, data, _STORE, zlib.crc32(data))


def write_zip(members: Iterable[ZipMember]) -> bytes:
    """The deterministic archive of prepared members, in the order given."""
    return _layout((m.name, m.stored, m.method, m.crc, len(m.data)) for m in members)


def read_zip(raw: bytes) -> list[ZipMember]:
    """Members of an archive `write_zip` made, in order; ZipFormatError names what is wrong."""
    if len(raw) < _END.size:
        raise ZipFormatError("not a zip archive (too short)")
    try:
        sig, _d, _cd, n, n2, cd_size, cd_off, clen = _END.unpack_from(raw, len(raw) - _END.size)
        if sig != _SIG_END or n != n2 or clen != 0:
            raise ZipFormatError("zip end record altered")
        entries = []
        pos = cd_off
        for _ in range(n):
            f = _CENTRAL.unpack_from(raw, pos)
            if f[0] != _SIG_CENTRAL or f[4] not in (_DEFLATE, _STORE):
                raise ZipFormatError("zip central directory altered")
            method, crc, csize, usize, nlen, off = f[4], f[7], f[8], f[9], f[10], f[16]
            name = raw[pos + _CENTRAL.size : pos + _CENTRAL.size + nlen].decode("ascii")
            start = off + _LOCAL.size + nlen
            entries.append((name, raw[start : start + csize], method, crc, usize))
            pos += _CENTRAL.size + nlen
    except (struct.error, UnicodeDecodeError) as exc:
        raise ZipFormatError(f"zip directory unreadable: {exc}") from exc
    if _layout(entries) != raw:
        raise ZipFormatError("zip structure altered (headers, names, sizes or extra bytes)")
    members = []
    for name, comp, method, crc, usize in entries:
        if method == _STORE:
            data = comp
        else:
            d = zlib.decompressobj(-15)
            try:
                # never more than the size the header declares (plus one byte to see that
                # there is more): a stream that inflates past it is refused without being
                # inflated whole, so memory is bounded by what the archive says it holds
                data = d.decompress(comp, usize + 1)
            except zlib.error as exc:
                raise ZipFormatError(f"member {name}: compressed data corrupted ({exc})") from exc
            if len(data) > usize or d.unconsumed_tail:
                raise ZipFormatError(f"member {name}: inflates beyond its recorded size")
            if not d.eof or d.unused_data:
                raise ZipFormatError(f"member {name}: compressed data corrupted")
        if len(data) != usize or zlib.crc32(data) != crc:
            raise ZipFormatError(f"member {name}: data corrupted (CRC/length)")
        members.append(ZipMember(name, data, comp, method, crc))
    return members
