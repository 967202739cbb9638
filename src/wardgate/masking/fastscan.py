"""The compiled pre-filter: one Hyperscan pass tells the scanner where to look.

Theory of operation: the pure-Python scanner pays for gates and regular
expression searches per row. This module compiles, once per recognizer set, a
Hyperscan block-mode database whose reports are of two kinds:

- *digit candidates*: for each recognizer of the shared digit pass (cards,
  SSNs, IBANs, IPv4) an expression that every match of that recognizer must
  begin with, including the byte before it (the "not inside a run of digits"
  look-behind becomes a consumed context byte, since Hyperscan has no
  look-arounds). The report's start offset (or, for a fixed-width expression,
  which needs no start-of-match tracking, its end offset) gives the exact
  position where the Python pattern could match (`at`). Every expression counts
  a fixed number of digits or groups, so for one end offset there is exactly
  one start: the leftmost start Hyperscan reports is that candidate, and the
  set of reported positions is a superset of the positions where the
  recognizer matches.
- *gates* (reported once per scan): the email "@", the `key=value` key names
  (any case) and "://", the `needs` literals of the secret recognizers, and
  sound necessary conditions of the IPv6 and phone recognizers.

The scanner then runs its own Python patterns and validators, anchored at the
candidates and only behind the gates that fired, so its findings are exactly
those of the pure-Python path (tests compare the two). Expressions assume a
byte before the data (the scanner prepends a NUL; the masker's row buffer
starts with NUL bytes). Custom (configured) recognizers are not compiled: a
user's Python regular expression and Hyperscan's dialect differ in corners
(`{,n}`, `\\Z`), and a pre-filter that missed a match would pass a value
unmasked, so they always run in Python.

Without the `hyperscan` package (or with WARDGATE_MASKING_COMPILED=0) nothing
here is used and the scanner runs its pure-Python path with identical results.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from wardgate.masking.recognizers import (
    _CARD_REST,
    _IBAN_REST,
    _IPV4_REST,
    _PW_KEY_LIST,
    _SSN_REST,
    Recognizer,
    builtin_recognizers,
)

try:  # the compiled path is optional: without it the scanner is pure Python
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised where the wheel is missing
    _hs = None

__all__ = ["AVAILABLE", "Prefilter", "build", "version"]

AVAILABLE = _hs is not None and os.environ.get("WARDGATE_MASKING_COMPILED", "1") != "0"

# Digit-pass recognizers, keyed by their pattern after the first digit: the
# expression every match begins with (context byte first) and where the
# recognizer's first digit lies: this many bytes after the report's start, or
# (a negative number, for fixed-width expressions, which need no start-of-match
# tracking) this many bytes before its end.
_DIGIT_PREFILTERS: dict[bytes, tuple[bytes, int]] = {
    # "DE89 3704 ...": a non-alphanumeric byte, two capitals, the two check digits
    _IBAN_REST: (rb"[^A-Za-z0-9][A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11}", 3),
    # a digit 1-6 or 8 starting a run, then 12 more digits with optional separators
    _CARD_REST: (rb"[^0-9][1-68](?:[ \-]?[0-9]){12}", 1),
    # the Python pattern's separators must repeat; any two separators here (a superset)
    _SSN_REST: (rb"[^0-9\-][0-9]{3}[ .\-][0-9]{2}[ .\-][0-9]{4}", -11),
    _IPV4_REST: (rb"[^A-Za-z0-9_.][0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]", 1),
}

_HEX_COLON_GATE = rb":[0-9A-Fa-f.]{0,43}:"  # IPv6: a valid candidate holds two colons
_PHONE_GATE = rb"[0-9]{3}[ .\-][0-9]{4}|\+[1-9]"  # the end of one form, the start of the other


def _literal(needle: bytes | int) -> bytes:
    raw = bytes([needle]) if isinstance(needle, int) else needle
    return b"".join(b"\\x%02x" % c for c in raw)


def _gate_for(rec: Recognizer) -> tuple[bytes, int] | None:
    """A sound gate expression (and flags) for a non-digit built-in recognizer, or None."""
    if rec.kind == "custom":
        return None
    try:
        if rec not in builtin_recognizers(rec.entity):
            return None  # a hand-made recognizer: run it ungated
    except KeyError:
        return None
    if rec.needs:
        return b"|".join(_literal(n) for n in rec.needs), 0
    if rec.entity == "IP_ADDRESS" and rec.min_colons >= 2:
        return _HEX_COLON_GATE, 0
    if rec.entity == "PHONE_NUMBER":
        return _PHONE_GATE, 0
    return None


class Prefilter:
    """A compiled database and what each of its reports means for one scanner."""

    __slots__ = ("_db", "_scratch", "_owner", "gate_ids")

    def __init__(self, db: object, gate_ids: dict[object, int]) -> None:
        self._db = db
        self._scratch = threading.local()
        self._owner = threading.get_ident()
        # gate key ("email", "password" or an index into the scanner's other
        # recognizers) -> the bit set in `scan()`'s gate mask when it fired
        self.gate_ids = gate_ids

    def scan(self, data: bytes, shift: int) -> tuple[dict[int, int], int]:
        """Candidates {position in the scanned data: bit mask of digit recognizers} and
        the mask of gates that fired. `data` must begin with a byte that is not part of
        the value (NUL); positions are reduced by `shift`."""
        cands: dict[int, int] = {}
        db = self._db
        if db is None:
            return cands, 0
        if threading.get_ident() == self._owner:
            db.scan(data, match_event_handler=_on_match, context=cands)  # type: ignore[attr-defined]
        else:  # another thread: its own scratch space (a scratch is single-user)
            scratch = getattr(self._scratch, "s", None)
            if scratch is None:
                scratch = self._scratch.s = db.scratch.clone()  # type: ignore[attr-defined]
            db.scan(data, match_event_handler=_on_match, context=cands, scratch=scratch)  # type: ignore[attr-defined]
        gates = cands.pop(-1, 0)
        if shift and cands:
            cands = {at - shift: m for at, m in cands.items()}
        return cands, gates


# Report ids: a digit recognizer's id is (its index << 5) | 16 * from_end | offset,
# where offset is how far its first digit lies after the report's start (or, with
# from_end, before its end); gate j has id _GATE + j.
_GATE = 1 << 13


def _on_match(i: int, start: int, end: int, _flags: int, cands: dict[int, int]) -> None:
    """One report: a candidate position (key >= 1) or a gate (the bit mask under -1)."""
    if i < _GATE:
        at = end - (i & 15) if i & 16 else start + (i & 15)
        cands[at] = cands.get(at, 0) | 1 << (i >> 5)
    else:
        cands[-1] = cands.get(-1, 0) | 1 << (i - _GATE)


_CACHE: dict[tuple[Recognizer, ...], Prefilter | None] = {}
_CACHE_LOCK = threading.Lock()


def build(
    digit: Sequence[Recognizer],
    email: Recognizer | None,
    password: bool,
    other: Sequence[Recognizer],
) -> Prefilter | None:
    """The pre-filter for one scanner's recognizers; None when it cannot be built
    (no Hyperscan, or a digit-pass recognizer this module does not know)."""
    if not AVAILABLE:
        return None
    key = (*digit, *(() if email is None else (email,)), *other, password)  # type: ignore[arg-type]
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    pre = _compile(digit, email, password, other)
    with _CACHE_LOCK:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = pre
    return pre


def _compile(
    digit: Sequence[Recognizer],
    email: Recognizer | None,
    password: bool,
    other: Sequence[Recognizer],
) -> Prefilter | None:
    assert _hs is not None
    expressions: list[bytes] = []
    flags: list[int] = []
    ids: list[int] = []
    for index, rec in enumerate(digit):
        known = _DIGIT_PREFILTERS.get(rec.rest)
        if known is None or rec.lead_back != (2 if rec.rest == _IBAN_REST else 0):
            return None  # an unknown digit recognizer: the pure-Python path is exact
        expressions.append(known[0])
        if known[1] < 0:  # fixed width: counted back from the end
            flags.append(0)
            ids.append(index << 5 | 16 | -known[1])
        else:
            flags.append(_hs.HS_FLAG_SOM_LEFTMOST)
            ids.append(index << 5 | known[1])
    gate_ids: dict[object, int] = {}

    def gate(name: object, expression: bytes, extra: int = 0) -> None:
        gate_ids[name] = len(gate_ids)
        ids.append(_GATE + len(gate_ids) - 1)
        expressions.append(expression)
        flags.append(_hs.HS_FLAG_SINGLEMATCH | extra)

    if password:
        keys = sorted(set(_PW_KEY_LIST), key=len, reverse=True)
        gate("password", b"|".join(_literal(k) for k in keys) + rb"|://", _hs.HS_FLAG_CASELESS)
    for index, rec in enumerate(other):
        found = _gate_for(rec)
        if found is not None:
            gate(index, found[0], found[1])
    if not expressions:  # nothing to compile (emails only): the Python gates suffice
        return Prefilter(None, gate_ids)
    if len(digit) > 200:
        return None  # ids: index << 5 must stay below _GATE
    db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    db.compile(expressions=expressions, ids=ids, flags=flags)
    return Prefilter(db, gate_ids)


def version() -> str:
    """The installed hyperscan package's version ("" when it is not installed)."""
    if _hs is None:
        return ""
    return str(getattr(_hs, "__version__", "?"))


def gated(pre: Prefilter | None) -> Callable[[object], int]:
    """The gate bit of a key (0: not gated, always run)."""
    if pre is None:
        return lambda key: 0
    ids = pre.gate_ids
    return lambda key: (1 << ids[key]) if key in ids else 0
