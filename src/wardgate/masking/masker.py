"""The streaming result masker: one DataRow (or COPY line) in, its masked form out.

Theory of operation: `MaskingEngine.plan()` decides once per result, from the
RowDescription, what happens to each column (a *mode*), so the per-row work is a
few list operations and one scan:

- column rules replace the whole non-NULL value (regardless of content) with the
  rule's strategy; where the output would not parse as the column's type (any
  type that is not text-like) the value becomes NULL and is counted as nulled;
- all scanned columns of a row are joined with NUL bytes (text values never
  contain NUL and no built-in pattern matches one) and scanned in ONE pass, so
  gate checks and regular-expression calls are paid per row, not per value;
  findings are mapped back to their value by offset;
- a finding in a column whose type is not text-like (a card number in a
  `numeric`, an IP in an `inet`, anything in a binary non-text value) turns the
  value into NULL: a masked span would not parse as that type;
- types that cannot hold any built-in entity (bool, int2/int4, floats, dates,
  times, timestamps, intervals, uuid, bytea) are not scanned at all unless a
  custom entity is configured (a user regex may match a date of birth).

With the compiled scanner (fastscan.py), `mask_data_row` does not decode the
row into values at all when every column is skipped, plain text or
null-on-finding: it walks the length words once, copies the body with the
length words (and skipped or ruled values) zeroed into NUL bytes, scans that
buffer in one pass (each value sits at its own offset, NUL-separated, so a
finding's offsets are the body's), and rebuilds the body with one join from the
untouched stretches and the columns that changed. Its results are those of the
value path (tests/masking/test_compiled_path.py).

With the C row masker (native.py, `_rowmask.c`, built by `pip install -e .`
where a compiler is found), `mask_data_row` and `mask_data_rows` (a run of
whole DataRow messages in one call) first hand the body to C, which masks
emails, cards, SSNs, IBANs, IPv4 addresses and column rules itself; a row
where another recognizer might find something (a gate fires) comes back and
takes the path above. Same output either way (tests/masking/test_native_path.py).

Nothing is buffered beyond the row at hand. A row with no finding and no rule
returns the very object it was given (`mask_data_row` returns the same body
bytes), so the engine can forward the original message. Any failure raises
`MaskingError` and never carries a value in its message (strict: the engine
refuses the row).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wardgate.masking import native
from wardgate.masking.bodypath import (
    _decode_data_row,
    decode_data_row,
    encode_data_row,
    splice,
    walker,
)
from wardgate.masking.copyformat import copy_escape, copy_unescape
from wardgate.masking.errors import MaskingError
from wardgate.masking.scanner import Scanner

__all__ = [
    "ColumnInfo",
    "MaskingError",
    "ResultMasker",
    "TEXT_LIKE_OIDS",
    "UNSCANNED_OIDS",
    "copy_escape",
    "copy_unescape",
    "decode_data_row",
    "encode_data_row",
]


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """One RowDescription field, as far as masking cares."""

    name: str
    table: str | None  # "customers" or "public.customers"; None if not a table column
    type_oid: int  # 0: unknown (COPY), treated as text
    format: int = 0  # 0 text, 1 binary


JSON_OID, JSONB_OID = 114, 3802
TEXT_LIKE_OIDS = frozenset({25, 1043, 1042, 19, 18, JSON_OID, JSONB_OID, 142, 705, 2275, 0})
# Types whose text (or binary) form cannot hold any built-in entity.
UNSCANNED_OIDS = frozenset({16, 21, 23, 26, 700, 701, 1082, 1083, 1114, 1184, 1186, 1266, 2950})
_FIRST_USER_OID = 16384

# column modes
SKIP, SCAN_TEXT, SCAN_NULL, SCAN_JSONB_BIN = 0, 1, 2, 3
# bytea: its bytes are scanned (hex text format decoded first); a finding makes it NULL.
# Without this `SELECT email::bytea` would carry an address out in hex.
SCAN_BYTEA_HEX, SCAN_BYTEA_RAW = 4, 5
BYTEA_OID = 17
# binary int8 and numeric: scanned as their text (a card number kept in a bigint is 8
# bytes on the wire, no digits; asyncpg reads both in binary); NULL on a finding. Only
# a value with 13 digits or more can hold a card: rows without one take the fast paths
# with these columns skipped (ResultMasker._numbers_may_hold)
SCAN_INT8_BIN, SCAN_NUMERIC_BIN = 6, 7
INT8_OID, NUMERIC_OID = 20, 1700
_NUMBER_MODES = (SCAN_INT8_BIN, SCAN_NUMERIC_BIN)
_NUMERIC_HEAD = struct.Struct("!hhHh")
# binary int8 high four bytes: at or past the first a small positive value cannot have,
# before the first a small negative one has (|v| < 0xE8 << 32 = 996,432,412,672)
_INT8_SMALL_HI, _INT8_SMALL_LO = b"\x00\x00\x00\xe8", b"\xff\xff\xff\x18"
_NUMERIC_SIGNS = {0x0000: "", 0x4000: "-"}
_NUMERIC_SPECIAL = frozenset({0xC000, 0xD000, 0xF000})  # NaN, +Infinity, -Infinity
RULE_TEXT, RULE_JSON, RULE_JSONB_BIN, RULE_NULL = 10, 11, 12, 13

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_NULL_LEN = b"\xff\xff\xff\xff"
# the per-result value cache: entries (cleared when full) and the longest value kept
_CACHE_ENTRIES = 4096
_CACHE_VALUE_BYTES = 256
_CACHE_PROBE = 512  # misses per probe window (64 rows of 8 scanned distinct values)
_CACHE_MIN_HIT_RATIO = 10  # at least one hit per 10 misses, or the cache is dropped
_CLEAN: tuple[None, tuple[str, ...]] = (None, ())


def text_like(col: ColumnInfo) -> bool:
    """Does a replaced value still parse as this column's type?"""
    if col.type_oid in TEXT_LIKE_OIDS:
        return True
    # user types (citext, enums, domains reported by oid) in text format
    return col.format == 0 and col.type_oid >= _FIRST_USER_OID


def scan_mode(col: ColumnInfo, *, custom: bool) -> int:
    if col.type_oid == BYTEA_OID:
        return SCAN_BYTEA_RAW if col.format == 1 else SCAN_BYTEA_HEX
    if col.type_oid in UNSCANNED_OIDS and not custom:
        return SKIP
    if col.format == 1 and col.type_oid == JSONB_OID:
        return SCAN_JSONB_BIN
    if col.format == 1 and col.type_oid == INT8_OID:
        return SCAN_INT8_BIN
    if col.format == 1 and col.type_oid == NUMERIC_OID:
        return SCAN_NUMERIC_BIN
    return SCAN_TEXT if text_like(col) else SCAN_NULL


def rule_mode(col: ColumnInfo) -> int:
    if col.type_oid in (JSON_OID, JSONB_OID):
        return RULE_JSONB_BIN if col.format == 1 and col.type_oid == JSONB_OID else RULE_JSON
    return RULE_TEXT if text_like(col) else RULE_NULL


def _binary_numeric_text(v: bytes) -> bytes:
    """The text of a binary numeric (PostgreSQL's numeric_send: digit count, weight,
    sign, display scale, then base-10000 digits)."""
    try:
        ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(v)
        if ndigits < 0 or dscale < 0 or len(v) != 8 + 2 * ndigits:
            raise MaskingError("malformed binary numeric")
        if sign not in _NUMERIC_SIGNS:
            if sign in _NUMERIC_SPECIAL and ndigits == 0:
                return b"NaN"  # NaN, +-Infinity: no digits
            raise MaskingError("malformed binary numeric")
        digits = struct.unpack_from(f"!{ndigits}h", v, 8)

        def group(j: int) -> str:
            return f"{digits[j]:04d}" if 0 <= j < ndigits else "0000"

        whole = "".join(group(j) for j in range(weight + 1)).lstrip("0") or "0"
        frac = "".join(group(j) for j in range(weight + 1, weight + 1 + (dscale + 3) // 4))
        text = _NUMERIC_SIGNS[sign] + whole + ("." + frac[:dscale] if dscale else "")
        return text.encode()
    except struct.error:
        raise MaskingError("malformed binary numeric") from None


class ResultMasker:
    """Masks the rows of one result (one RowDescription) and counts what it did."""

    def __init__(
        self,
        columns: Sequence[ColumnInfo],
        *,
        scanner: Scanner | None,
        replacers: dict[str, Callable[[bytes], bytes]],
        rules: Sequence[tuple[int, int, Callable[[bytes], bytes], str, str]],
        scan_modes: Sequence[int],
        rule_descriptions: list[dict],
        number_gate: bool = False,
    ) -> None:
        # binary int8/numeric columns without the C masker (which gates them itself):
        # with `number_gate`, a second masker scans them (the Python value path) for the
        # rows where one is big enough to hold a card; this one skips them
        self._numbers: ResultMasker | None = None
        self._number_cols = tuple(i for i, m in enumerate(scan_modes) if m in _NUMBER_MODES)
        if self._number_cols and number_gate:
            self._numbers = ResultMasker(
                columns,
                scanner=scanner,
                replacers=replacers,
                rules=rules,
                scan_modes=scan_modes,
                rule_descriptions=rule_descriptions,
                number_gate=False,
            )
            # per column up to the last number column: its mode there, or 0
            self._number_kinds = tuple(
                m if m in _NUMBER_MODES else 0 for m in scan_modes[: max(self._number_cols) + 1]
            )
            scan_modes = [SKIP if m in _NUMBER_MODES else m for m in scan_modes]
        self.columns = tuple(columns)
        self._ncols = len(self.columns)
        self._scanner = scanner
        self._find = scanner.spans if scanner is not None else None
        self._replacers = replacers
        # (index, mode, replacer, rule, strategy)
        self._rules = tuple(rules)
        self._scan_idx = tuple(i for i, m in enumerate(scan_modes) if m != SKIP)
        self._scan_modes = tuple(scan_modes)
        self._plain = all(scan_modes[i] == SCAN_TEXT for i in self._scan_idx)
        self._rule_descriptions = rule_descriptions
        self._counts: list[dict[str, int]] = [{} for _ in self.columns]
        self._rule_counts = [0] * self._ncols
        self._nulled = [0] * self._ncols
        self.rows = 0
        if not self._scan_idx:
            self._find = None
        # Per-result cache of scanned text values: value -> (masked value or None
        # when unchanged, entities found). Only for plain text columns and built-in
        # recognizers (no built-in pattern crosses the NUL separator, so a value
        # scanned alone or joined into a row gives the same findings).
        self._cache: dict[bytes, tuple[bytes | None, tuple[str, ...]]] | None = (
            {}
            if scanner is not None
            and not scanner.crosses_nul
            and all(scan_modes[i] in (SCAN_TEXT, SCAN_NULL) for i in self._scan_idx)
            else None
        )
        self._null_on_finding = tuple(m == SCAN_NULL for m in scan_modes)
        # the cache is dropped for the rest of the result when a probe window of
        # misses brings too few hits (values that do not repeat only cost lookups)
        self._probe_misses = 0
        self._probe_hits = 0
        # the compiled body path: built-in recognizers only (none crosses a NUL) and
        # columns that are skipped, plain text or null-on-finding
        self._body_path = bool(
            scanner is not None
            and scanner.compiled
            and not scanner.crosses_nul
            and self._scan_idx
            and all(m in (SKIP, SCAN_TEXT, SCAN_NULL) for m in scan_modes)
        )
        self._walk = walker([m == SKIP for m in scan_modes])  # skipped: zeroed in the scan
        self._scan_body = scanner.padded_scan if self._body_path else None  # type: ignore[union-attr]
        self._count_word = _I16.pack(self._ncols)
        # the C row masker (native.py), tried first for every DataRow; None without it
        modes = list(scan_modes)
        for i, mode, _repl, _rule, _strategy in self._rules:
            modes[i] = mode
        self._native_masker = native.row_masker(
            scanner.recognizers if scanner is not None else (), modes, replacers, self._rules
        )
        nm = self._native_masker
        self._native = nm.mask if nm is not None else None  # type: ignore[attr-defined]
        self._native_run = nm.mask_run if nm is not None else None  # type: ignore[attr-defined]
        if self._numbers is not None:
            # one set of counts for both; rows one at a time (each passes the gate)
            numbers = self._numbers
            numbers._counts, numbers._nulled = self._counts, self._nulled
            numbers._rule_counts = self._rule_counts
            self._native_run = None

    # -- values ---------------------------------------------------------------

    def mask_values(self, values: list[bytes | None]) -> list[bytes | None]:
        """Masked values of one row (same count); the input list when nothing changed."""
        if self._numbers is not None:  # this one skips the binary numbers: the other not
            return self._numbers.mask_values(values)
        return self._mask_values(values)

    def _mask_values(self, values: list[bytes | None]) -> list[bytes | None]:
        try:
            return self._mask(values)
        except MaskingError:
            raise
        except Exception as exc:  # never let a value escape in a message
            raise MaskingError(f"masking failed ({type(exc).__name__})") from None

    def _mask(self, values: list[bytes | None]) -> list[bytes | None]:
        if len(values) != self._ncols:
            raise MaskingError(
                f"row has {len(values)} values but the result has {self._ncols} columns"
            )
        self.rows += 1
        out = values
        if self._rules:
            for i, mode, repl, _rule, _strategy in self._rules:
                v = values[i]
                if v is None:
                    continue
                if out is values:
                    out = list(values)
                self._rule_counts[i] += 1
                if mode == RULE_TEXT:
                    out[i] = repl(v)
                elif mode == RULE_NULL:
                    out[i] = None
                    self._nulled[i] += 1
                elif mode == RULE_JSON:
                    out[i] = b'"' + repl(v) + b'"'
                else:  # binary jsonb: version byte, then JSON text
                    out[i] = b'\x01"' + repl(v[1:]) + b'"'
        find = self._find
        if find is None:
            return out
        if self._cache is not None:
            return self._mask_cached(values, out, find)
        idx = self._scan_idx
        if self._plain:
            parts = [out[i] or b"" for i in idx]
        else:
            parts = [self._prepare(out[i], self._scan_modes[i]) for i in idx]
        found = find(parts[0] if len(parts) == 1 else b"\x00".join(parts))
        if not found:
            return out
        if out is values:
            out = list(values)
        replacers = self._replacers
        counts_all = self._counts
        # walk the parts in step with the (sorted) findings
        k = 0
        base = 0
        v = parts[0]
        limit = len(v)
        pieces: list[bytes] = []
        last = 0
        for entity, s, e in found:
            if s > limit:
                if pieces:
                    self._store(out, idx[k], v, pieces, last)
                    pieces = []
                    last = 0
                while s > limit:
                    k += 1
                    base = limit + 1
                    v = parts[k]
                    limit = base + len(v)
            if e > limit:  # a custom pattern crossed a separator: clip it
                e = limit
            rs = s - base
            re_ = e - base
            if rs < last or re_ <= rs:
                continue
            pieces.append(v[last:rs])
            pieces.append(replacers[entity](v[rs:re_]))
            counts = counts_all[idx[k]]
            counts[entity] = counts.get(entity, 0) + 1
            last = re_
        if pieces:
            self._store(out, idx[k], v, pieces, last)
        return out

    def _mask_cached(
        self,
        values: list[bytes | None],
        out: list[bytes | None],
        find: Callable[[bytes], list[tuple[str, int, int]]],
    ) -> list[bytes | None]:
        """The scan of text (and null-on-finding) columns, through the per-result value cache.

        Values seen before in this result are looked up; the others are joined
        with NUL bytes and scanned in one pass, and each one's outcome cached.
        """
        cache = self._cache
        counts_all = self._counts
        null_on_finding = self._null_on_finding
        miss_cols: list[int] = []
        parts: list[bytes] = []
        hits = 0
        for i in self._scan_idx:
            v = out[i]
            if not v:
                continue
            hit = cache.get(v)  # type: ignore[union-attr]
            if hit is None:
                miss_cols.append(i)
                parts.append(v)
                continue
            hits += 1
            if hit[0] is not None:
                if out is values:
                    out = list(values)
                if null_on_finding[i]:
                    out[i] = None
                    self._nulled[i] += 1
                else:
                    out[i] = hit[0]
                counts = counts_all[i]
                for entity in hit[1]:
                    counts[entity] = counts.get(entity, 0) + 1
        self._probe_hits += hits
        if not parts:
            return out
        misses = self._probe_misses = self._probe_misses + len(parts)
        if misses >= _CACHE_PROBE:
            if self._probe_hits * _CACHE_MIN_HIT_RATIO < misses:
                self._cache = None  # not worth it for this result
            self._probe_misses = self._probe_hits = 0
        found = find(parts[0] if len(parts) == 1 else b"\x00".join(parts))
        if len(cache) + len(parts) > _CACHE_ENTRIES:  # type: ignore[arg-type]
            cache.clear()  # type: ignore[union-attr]
        if not found:
            for v in parts:
                if len(v) <= _CACHE_VALUE_BYTES:
                    cache[v] = _CLEAN  # type: ignore[index]
            return out
        if out is values:
            out = list(values)
        replacers = self._replacers
        fi = 0
        nfound = len(found)
        base = 0
        for k, v in enumerate(parts):
            limit = base + len(v)
            pieces: list[bytes] = []
            entities: list[str] = []
            last = 0
            while fi < nfound:
                entity, s, e = found[fi]
                if s > limit:
                    break
                fi += 1
                rs = s - base
                re_ = (limit if e > limit else e) - base
                if rs < last or re_ <= rs:
                    continue
                pieces.append(v[last:rs])
                pieces.append(replacers[entity](v[rs:re_]))
                entities.append(entity)
                last = re_
            if entities:
                pieces.append(v[last:])
                masked = b"".join(pieces)
                col = miss_cols[k]
                if null_on_finding[col]:
                    out[col] = None
                    self._nulled[col] += 1
                else:
                    out[col] = masked
                counts = counts_all[col]
                for entity in entities:
                    counts[entity] = counts.get(entity, 0) + 1
                if len(v) <= _CACHE_VALUE_BYTES:
                    cache[v] = (masked, tuple(entities))  # type: ignore[index]
            elif len(v) <= _CACHE_VALUE_BYTES:
                cache[v] = _CLEAN  # type: ignore[index]
            base = limit + 1
        return out

    def _store(
        self,
        out: list[bytes | None],
        col: int,
        v: bytes,
        pieces: list[bytes],
        last: int,
    ) -> None:
        mode = self._scan_modes[col]
        if mode == SCAN_TEXT:
            pieces.append(v[last:])
            out[col] = b"".join(pieces)
        elif mode in (SCAN_NULL, SCAN_BYTEA_HEX, SCAN_BYTEA_RAW, SCAN_INT8_BIN, SCAN_NUMERIC_BIN):
            out[col] = None
            self._nulled[col] += 1
        else:
            pieces.append(v[last:])
            out[col] = b"\x01" + b"".join(pieces)

    @staticmethod
    def _prepare(v: bytes | None, mode: int) -> bytes:
        if v is None:
            return b""
        if mode == SCAN_JSONB_BIN:
            if not v or v[0] != 1:
                raise MaskingError("unsupported binary jsonb version")
            return v[1:]
        if mode == SCAN_BYTEA_HEX and v[:2] == b"\\x":
            return bytes.fromhex(v[2:].decode("ascii"))
        if mode == SCAN_INT8_BIN:
            if len(v) != 8:
                raise MaskingError("malformed binary int8")
            return str(int.from_bytes(v, "big", signed=True)).encode()
        if mode == SCAN_NUMERIC_BIN:
            return _binary_numeric_text(v)
        return v

    # -- DataRow ------------------------------------------------------------------

    @property
    def wants_number_gate(self) -> bool:
        """Binary int8/numeric columns and no C masker to gate them: every row would
        take the Python value path; a masker made with `number_gate` skips them where
        no value is big enough to hold a card (MaskingEngine.plan)."""
        return bool(self._number_cols) and self._native_masker is None and self._numbers is None

    def _numbers_may_hold(self, body: bytes) -> bool:
        """Does a binary int8/numeric value of this row have 13 digits or more (or is
        the row malformed)? Then the masker that scans them takes the row."""
        unpack = _I32.unpack_from
        pos = 2
        try:
            for kind in self._number_kinds:
                (n,) = unpack(body, pos)
                pos += 4
                if n <= 0:
                    continue
                if kind == SCAN_INT8_BIN:
                    # |v| < 0xE8 << 32 (< 10^12) by its high four bytes, no int made
                    if n != 8 or _INT8_SMALL_HI <= body[pos : pos + 4] < _INT8_SMALL_LO:
                        return True
                elif kind:
                    # numeric: 4 digits a group; 4 groups or more, or an integer part of
                    # 4 groups (weight 3: 10^12 and up), may spell a card number
                    if body[pos] or body[pos + 1] >= 4:
                        return True
                    high, low = body[pos + 2], body[pos + 3]
                    if high < 0x80 and (high or low >= 3):
                        return True
                pos += n
        except (struct.error, IndexError):
            return True
        return False

    def mask_data_row(self, body: bytes) -> bytes:
        """A DataRow message body in (Int16 count, Int32 length + bytes each), masked body out."""
        if self._numbers is not None and self._numbers_may_hold(body):
            return self._numbers._mask_data_row_python(body)
        if self._native is not None:
            try:
                out = self._native(body)
            except Exception as exc:  # never let a value escape in a message
                raise MaskingError(f"masking failed ({type(exc).__name__})") from None
            if out is not None:
                return out
            # None: a gate fired (or the body is malformed): the Python path
        return self._mask_data_row_python(body)

    @property
    def batches(self) -> bool:
        """Whether `mask_data_rows` masks a run in one native call (the relay then hands
        it whole runs of rows instead of one row at a time)."""
        return self._native_run is not None

    def mask_data_rows(self, run: bytes) -> bytes:
        """Whole DataRow messages back to back (type byte, Int32 length, body each), as
        `MessageReader.next_run` hands them out: the same messages masked, lengths
        fixed; `run` itself when nothing changed. With the C row masker the run is
        masked in one call, but for the rows a gate sends to the Python path.
        MaskingError: a row could not be masked, or the run is not whole DataRows;
        no row of the run may then be sent (strict).
        """
        mask_run = self._native_run
        size = len(run)
        pieces: list[bytes] = []
        pos = 0
        while pos < size:
            if mask_run is not None:
                try:
                    out, reached = mask_run(run, pos)
                except ValueError:
                    raise MaskingError("malformed DataRow run") from None
                except Exception as exc:  # never let a value escape in a message
                    raise MaskingError(f"masking failed ({type(exc).__name__})") from None
                if reached == size and pos == 0:
                    return out  # `run` itself when nothing changed
                pieces.append(out)
                pos = reached
                if pos == size:
                    break
            # one message by the Python path
            end = pos + 1 + int.from_bytes(run[pos + 1 : pos + 5], "big")
            if run[pos] != 0x44 or size - pos < 5 or end - pos < 5 or end > size:
                raise MaskingError("malformed DataRow run")
            body = run[pos + 5 : end]
            if self._numbers is not None:
                masked = self.mask_data_row(body)
            else:
                masked = self._mask_data_row_python(body)
            if masked is body or masked == body:
                pieces.append(run[pos:end])
            else:
                pieces.append(b"D" + (len(masked) + 4).to_bytes(4, "big") + masked)
            pos = end
        out = b"".join(pieces)
        return run if out == run else out

    def _mask_data_row_python(self, body: bytes) -> bytes:
        if self._body_path and self._cache is None:  # the cache decides first (see _mask_cached)
            try:
                return self._mask_body(body)
            except MaskingError:
                raise
            except Exception as exc:  # never let a value escape in a message
                raise MaskingError(f"masking failed ({type(exc).__name__})") from None
        values = _decode_data_row(body)
        out = self._mask_values(values)  # a row with big binary numbers never gets here
        if out is values:
            return body
        return encode_data_row(out)

    def _mask_body(self, body: bytes) -> bytes:
        """`mask_data_row` without decoding into values: one walk, one scan, one join."""
        walked = self._walk(body) if body.startswith(self._count_word) else None
        if walked is None:
            # malformed or another column count: the value path raises the right error
            return encode_data_row(self.mask_values(_decode_data_row(body)))
        # the scan buffer is the body with its count and length words (and skipped or
        # ruled values) as NUL bytes, so every value keeps its offset
        buffer, starts, ends = walked
        self.rows += 1
        found = self._scan_body(buffer)
        rules = self._rules
        if not rules:
            if not found:
                return body
            return splice(
                body,
                found,
                starts,
                ends,
                self._replacers,
                self._counts,
                self._null_on_finding,
                self._nulled,
            )
        changed: list[tuple[int, bytes | None]] = []
        if found:
            replacers = self._replacers
            counts_all = self._counts
            null_on_finding = self._null_on_finding
            col = -1
            vend = 0
            last = 0
            pieces: list[bytes] = []
            for entity, s, e in found:
                if s >= vend:  # the first finding in another value
                    if col >= 0:
                        if null_on_finding[col]:
                            changed.append((col, None))
                            self._nulled[col] += 1
                        else:
                            pieces.append(body[last:vend])
                            changed.append((col, b"".join(pieces)))
                    col = bisect_right(starts, s) - 1
                    last = starts[col]
                    vend = ends[col]
                    pieces = []
                pieces.append(body[last:s])
                pieces.append(replacers[entity](body[s:e]))
                last = e
                counts = counts_all[col]
                counts[entity] = counts.get(entity, 0) + 1
            if null_on_finding[col]:
                changed.append((col, None))
                self._nulled[col] += 1
            else:
                pieces.append(body[last:vend])
                changed.append((col, b"".join(pieces)))
        self._rule_values(body, starts, ends, changed)
        if not changed:
            return body
        changed.sort(key=_first)
        pack = _I32.pack
        out: list[bytes] = []
        last = 0
        for k, v in changed:
            out.append(body[last : starts[k] - 4])
            if v is None:
                out.append(_NULL_LEN)
            else:
                out.append(pack(len(v)))
                out.append(v)
            last = ends[k]
        out.append(body[last:])
        return b"".join(out)

    def _rule_values(
        self,
        body: bytes,
        starts: Sequence[int],
        ends: Sequence[int],
        changed: list[tuple[int, bytes | None]],
    ) -> None:
        """Column rules of the body path: the whole non-NULL value is replaced."""
        for i, mode, repl, _rule, _strategy in self._rules:
            if body[starts[i] - 4] == 0xFF:  # NULL (-1): nothing to mask
                continue
            v = body[starts[i] : ends[i]]
            self._rule_counts[i] += 1
            if mode == RULE_TEXT:
                changed.append((i, repl(v)))
            elif mode == RULE_NULL:
                changed.append((i, None))
                self._nulled[i] += 1
            elif mode == RULE_JSON:
                changed.append((i, b'"' + repl(v) + b'"'))
            else:  # binary jsonb: version byte, then JSON text
                changed.append((i, b'\x01"' + repl(v[1:]) + b'"'))

    # -- COPY TO STDOUT (text format) --------------------------------------------------

    def mask_copy_line(self, line: bytes) -> bytes:
        """One COPY text-format data line (tab separated, `\\N` nulls, backslash escapes)."""
        if line in (b"\\.\n", b"\\.\r\n", b"\\."):
            return line
        eol = b""
        body = line
        if body.endswith(b"\r\n"):
            body, eol = body[:-2], b"\r\n"
        elif body.endswith(b"\n"):
            body, eol = body[:-1], b"\n"
        fields = body.split(b"\t")
        values: list[bytes | None] = [
            None if f == b"\\N" else (copy_unescape(f) if b"\\" in f else f) for f in fields
        ]
        out = self.mask_values(values)
        if out is values:
            return line
        encoded = [
            f if o is v else (b"\\N" if o is None else copy_escape(o))
            for f, v, o in zip(fields, values, out, strict=True)
        ]
        return b"\t".join(encoded) + eol

    # -- evidence -----------------------------------------------------------------------

    def summary(self) -> dict:
        """What was masked, for the statement's record (no values, only counts)."""
        names = _unique_names(self.columns)
        counts = [dict(c) for c in self._counts]
        nulled_counts = list(self._nulled)
        rule_counts = list(self._rule_counts)
        rows = self.rows + (self._numbers.rows if self._numbers is not None else 0)
        if self._native_masker is not None:  # the rows masked in C
            rows += native.merge_stats(self._native_masker, counts, nulled_counts, rule_counts)
        columns: dict[str, dict[str, int]] = {}
        column_rules: dict[str, dict] = {}
        for i, name in enumerate(names):
            if counts[i]:
                columns[name] = dict(sorted(counts[i].items()))
        for i, _mode, _repl, rule, strategy in self._rules:
            column_rules[names[i]] = {
                "rule": rule,
                "strategy": strategy,
                "values": rule_counts[i],
            }
        nulled = {names[i]: n for i, n in enumerate(nulled_counts) if n}
        return {
            "rows": rows,
            "columns": columns,
            "column_rules": column_rules,
            "nulled": nulled,
            "rules": self._rule_descriptions,
        }


def _first(item: tuple[int, bytes | None]) -> int:
    return item[0]


def _unique_names(columns: Sequence[ColumnInfo]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for col in columns:
        n = seen.get(col.name, 0)
        seen[col.name] = n + 1
        names.append(col.name if n == 0 else f"{col.name}#{n + 1}")
    return names
