"""The optional C row masker (`_rowmask.c`): whether a result can use it, and its set-up.

Theory of operation: the C extension masks a whole DataRow body (or a run of
DataRow messages) in one call for the recognizers it implements exactly
(emails; cards, SSNs, IBANs and IPv4 addresses of the digit pass) and for
column rules. Every other recognizer of a plan becomes a *gate* in C, a
necessary condition for that recognizer to find anything: its `needs` literals
(secrets); for `key=value` pairs a key name (any case) before a ":" or "=",
"://" or SQL `PASSWORD '`, as `_scan_password` looks for them; two colons with
hex digits between (IPv6); a phone-number shape. A row where a gate fires, or a
malformed row, comes back as None and the Python path (masker.py) masks it, so
the output never depends on whether the extension is there:
tests/masking/test_native_path.py compares both paths.

`row_masker()` returns the C masker of one result, or None when the extension
is not built (or WARDGATE_MASKING_NATIVE=0 or WARDGATE_MASKING_COMPILED=0 is
set) or the plan holds something C does not know: a custom entity, a hand-made
recognizer, a column scanned as bytea or binary jsonb. Counts of the rows
masked in C are read back with `merge_stats()` for the result's summary.
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
from wardgate.masking.validators import IBAN_LENGTHS

try:  # built by `pip install -e .` where a C compiler is found; optional
    from wardgate.masking import _rowmask
except ImportError:  # pragma: no cover - exercised where the extension is not built
    _rowmask = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "ENTITIES", "BUILT", "merge_stats", "row_masker"]

BUILT = _rowmask is not None
AVAILABLE = (
    BUILT
    and os.environ.get("WARDGATE_MASKING_NATIVE", "1") != "0"
    and os.environ.get("WARDGATE_MASKING_COMPILED", "1") != "0"
)

# entity codes of _rowmask.c, in order
ENTITIES = ("EMAIL_ADDRESS", "IBAN_CODE", "CREDIT_CARD", "US_SSN", "IP_ADDRESS")
_DIGIT_CODES = {_IBAN_REST: 1, _CARD_REST: 2, _SSN_REST: 3, _IPV4_REST: 4}
_G_PASSWORD, _G_IPV6, _G_PHONE = 1, 2, 4
# the column modes C knows (masker.py's numbers): skip, text, null on finding, rules
# (6, 7: binary int8 / numeric, skipped unless big enough to hold a card: then the row
# goes to the Python path)
_MODES = frozenset({0, 1, 2, 6, 7, 10, 11, 12, 13})

_PW_KEYS = tuple(dict.fromkeys(k.lower() for k in _PW_KEY_LIST))
_IBAN_TABLE = bytes(
    IBAN_LENGTHS.get(bytes([a, b]), 0) for a in range(0x41, 0x5B) for b in range(0x41, 0x5B)
)

# id(recognizers tuple) -> (that tuple, its plan): (digit codes, email, gates, needles),
# or None when C cannot take them. Keyed by identity, as a scanner's tuple lives as long
# as the engine's scanner cache does (hashing fifteen recognizers per result costs more
# than the rest of the set-up); the entry keeps the tuple alive, so its id is not reused.
_PLANS: dict[int, tuple[tuple[Recognizer, ...], tuple | None]] = {}
_PLANS_LOCK = threading.Lock()


def _recognizer_plan(recognizers: tuple[Recognizer, ...]) -> tuple | None:
    digits: list[int] = []
    email = False
    gates = 0
    needles: list[bytes] = []
    for rec in recognizers:
        if rec.kind == "custom":
            return None
        try:
            if rec not in builtin_recognizers(rec.entity):
                return None  # hand-made: only the Python path knows it
        except KeyError:
            return None
        if rec.kind == "digit":
            code = _DIGIT_CODES.get(rec.rest)
            if code is None or code in digits:
                return None
            digits.append(code)
        elif rec.kind == "email":
            email = True
        elif rec.kind == "password":
            gates |= _G_PASSWORD
        elif rec.needs:
            needles.extend(n if isinstance(n, bytes) else bytes([n]) for n in rec.needs)
        elif rec.entity == "IP_ADDRESS" and rec.min_colons >= 2:
            gates |= _G_IPV6
        elif rec.entity == "PHONE_NUMBER":
            gates |= _G_PHONE
        else:
            return None  # a built-in recognizer this module has no gate for
    return tuple(digits), email, gates, tuple(dict.fromkeys(needles))


def _plan_for(recognizers: tuple[Recognizer, ...]) -> tuple | None:
    hit = _PLANS.get(id(recognizers))
    if hit is not None and hit[0] is recognizers:
        return hit[1]
    plan = _recognizer_plan(recognizers)
    with _PLANS_LOCK:
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[id(recognizers)] = (recognizers, plan)
    return plan


def _replacer_form(fn: Callable[[bytes], bytes] | None) -> object:
    """What C is given for a replacer: its constant output, LAST_FOUR_DIGITS, or itself."""
    if fn is None:
        return None
    return getattr(fn, "native_form", fn)


def row_masker(
    recognizers: Sequence[Recognizer],
    modes: Sequence[int],
    replacers: dict[str, Callable[[bytes], bytes]],
    rules: Sequence[tuple[int, int, Callable[[bytes], bytes], str, str]],
) -> object | None:
    """The C masker of one result (an object with `mask(body)` and `stats()`), or None.

    `modes` per column as masker.py numbers them, with ruled columns given their
    rule mode; `rules` as ResultMasker takes them.
    """
    if not AVAILABLE or not _MODES.issuperset(modes):
        return None
    plan = _plan_for(recognizers if isinstance(recognizers, tuple) else tuple(recognizers))
    if plan is None:
        return None
    digits, email, gates, needles = plan
    rule_fns: list[object] = [None] * len(modes)
    for i, _mode, repl, _rule, _strategy in rules:
        rule_fns[i] = _replacer_form(repl)
    forms = [replacers.get(name) for name in ENTITIES]
    try:
        return _rowmask.RowMasker(  # type: ignore[union-attr]
            bytes(modes),
            tuple(rule_fns),
            digits,
            email,
            gates,
            needles,
            _PW_KEYS if gates & _G_PASSWORD else (),
            tuple([getattr(fn, "native_form", fn) for fn in forms]),
            _IBAN_TABLE,
        )
    except (ValueError, TypeError):
        return None  # something this build does not take: the Python path masks it


def merge_stats(
    masker: object,
    counts: list[dict[str, int]],
    nulled: list[int],
    rule_counts: list[int],
) -> int:
    """Add the C masker's counts to the per-column lists given; returns its row count."""
    rows, native_counts, native_nulled, native_ruled = masker.stats()  # type: ignore[attr-defined]
    for col, per_entity in enumerate(native_counts):
        for code, n in enumerate(per_entity):
            if n:
                entity = ENTITIES[code]
                counts[col][entity] = counts[col].get(entity, 0) + n
        nulled[col] += native_nulled[col]
        rule_counts[col] += native_ruled[col]
    return rows
