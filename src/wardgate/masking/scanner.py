"""The scanner: a set of recognizers run over one bytes value in as few passes as possible.

Theory of operation: `Scanner(recognizers)` sorts its recognizers by how they
are found. Cards, SSNs, IBANs and IPv4 addresses (kind "digit") share ONE
compiled alternation whose first byte is a digit that starts a run of digits,
so the regular expression engine skips in C to run starts and tries all of
them there; emails are found from each "@" (`bytes.find`), walking back over
the local part with `bytes.rstrip` and matching forward once; `key=value`
secrets are found from each ":" or "=", matching the reversed bytes before it
against the reversed key names (one anchored match) and the value after it;
every other recognizer runs behind its gates (`needs`, digit count, length,
colons). Validators run only on candidates; a rejected candidate resumes the
scan one byte after its start, first giving the other digit recognizers their
chance at the same position. The findings are `(entity, start, end)` tuples,
sorted, de-overlapped (earliest, then longest wins); custom patterns that cross
a NUL byte (the masker's value separator) are split there.

The compiled path (fastscan.py, when the `hyperscan` package is installed):
one Hyperscan pass over the data replaces the gates and the searches. It
reports the positions where a digit-pass recognizer could match and which
gates fired; the same Python patterns and validators then run anchored at
those positions and behind those gates only. Both paths give the same findings
(tests/masking/test_compiled_path.py runs them side by side); `compiled=False`
forces the pure-Python path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from operator import itemgetter

from wardgate.masking import fastscan
from wardgate.masking.recognizers import (
    _DIGITS,
    _EMAIL_LOCAL,
    _PW_KEY_REV,
    _PW_SEP,
    _PW_SQL,
    _PW_URL,
    _PW_VALUE,
    Finding,
    Recognizer,
    ascii_classes,
)

__all__ = ["Scanner"]


class Scanner:
    """A set of recognizers run over one bytes value, gated, validated, de-overlapped.

    Findings are `(entity, start, end)` tuples (cheaper than objects in the hot
    path); `find()` wraps them as `Finding`s for callers that prefer names.
    Passes: one shared digit pass (cards, SSNs, IBANs, IPv4: every one of them
    starts a run of digits, so only run starts are tried), emails from each
    "@", `key=value` secrets from each separator, then the other recognizers,
    each behind its gates.
    """

    __slots__ = (
        "recognizers",
        "_digit",
        "_digit_min",
        "_email",
        "_password",
        "_other",
        "_groups",
        "_custom",
        "_digit_recs",
        "_pre",
        "_email_gate",
        "_password_gate",
        "_other_gates",
        "_other_any",
        "_other_ungated",
        "_by_mask",
    )

    def __init__(self, recognizers: Sequence[Recognizer], *, compiled: bool | None = None) -> None:
        """`compiled`: None uses the compiled pre-filter when available, False never,
        True requires it (RuntimeError when it cannot be built)."""
        self.recognizers = tuple(recognizers)
        digit = [r for r in self.recognizers if r.kind == "digit"]
        self._digit_recs = tuple(digit)
        self._groups: dict[str, Recognizer] = {}
        parts = []
        for i, rec in enumerate(digit):
            self._groups[f"g{i}"] = rec
            parts.append(b"(?P<g%d>" % i + rec.rest + b")")
        self._digit = (
            (
                re.compile(ascii_classes(rb"\d(?<!\d\d)(?:" + b"|".join(parts) + rb")")).search,
                tuple(digit),
            )
            if digit
            else None
        )
        self._digit_min = min((r.min_digits for r in digit), default=0)
        self._email = next((r for r in self.recognizers if r.kind == "email"), None)
        self._password = any(r.kind == "password" for r in self.recognizers)
        self._custom = any(r.kind == "custom" for r in self.recognizers)
        other = [r for r in self.recognizers if r.kind not in ("digit", "email", "password")]
        self._other = tuple(_gate_tuple(r) for r in other)
        pre = None
        if compiled is not False:
            try:
                pre = fastscan.build(digit, self._email, self._password, other)
            except Exception:
                if compiled:
                    raise
                pre = None  # the pure-Python path finds the same, only slower
            if compiled and pre is None:
                raise RuntimeError("the compiled masking pre-filter is not available")
        self._pre = pre
        bit = fastscan.gated(pre)
        self._email_gate = bit("email")
        self._password_gate = bit("password")
        self._other_gates = tuple(bit(i) for i in range(len(other)))
        self._other_any = sum(self._other_gates)
        self._other_ungated = 0 in self._other_gates
        self._by_mask: dict[int, tuple[Recognizer, ...]] = {}  # candidate mask -> recognizers

    @property
    def compiled(self) -> bool:
        """Does this scanner use the compiled (Hyperscan) pre-filter?"""
        return self._pre is not None

    @property
    def crosses_nul(self) -> bool:
        """May a finding depend on bytes across a NUL (a custom pattern)?

        Built-in patterns never match a NUL and treat one like the end of the
        buffer, so a value scanned alone or NUL-joined into a row gives the same
        findings; a configured regular expression may match across one.
        """
        return self._custom

    def find(self, data: bytes) -> list[Finding]:
        """Every sensitive span in `data`, in order, not overlapping."""
        return [Finding(e, s, t) for e, s, t in self.spans(data)]

    def spans(self, data: bytes) -> list[tuple[str, int, int]]:
        """Every sensitive span in `data` as (entity, start, end), sorted, not overlapping."""
        if self._pre is None:
            return self.spans_python(data)
        data = bytes(data)
        return self._spans_compiled(data, b"\x00" + data, 1)

    def spans_padded(self, data: bytes) -> list[tuple[str, int, int]]:
        """`spans()` of data whose first byte is a NUL that belongs to no value (the
        masker's row buffer): no copy is made for the compiled pre-filter."""
        if self._pre is None:
            return self.spans_python(data)
        return self._spans_compiled(data)

    @property
    def padded_scan(self) -> Callable[[bytes], list[tuple[str, int, int]]]:
        """`spans_padded` without its dispatch (the masker's per-row call)."""
        return self.spans_python if self._pre is None else self._spans_compiled

    def _spans_compiled(
        self, data: bytes, padded: bytes | None = None, shift: int = 0
    ) -> list[tuple[str, int, int]]:
        """The compiled path: Hyperscan candidates and gates, then the Python patterns."""
        cands, gates = self._pre.scan(data if padded is None else padded, shift)  # type: ignore[union-attr]
        found: list[tuple[str, int, int]] = []
        if cands:
            self._digits_at(data, cands, found)
        if self._email is not None and 64 in data:  # one C-level test: cheaper than a report
            self._scan_email(data, found)
        if gates & self._password_gate:
            _scan_password(data, found)
        if gates & self._other_any or self._other_ungated:
            self._other_compiled(data, gates, found)
        if len(found) < 2 and not self._custom:
            return found
        return self._finish(data, found)

    def _other_compiled(self, data: bytes, gates: int, found: list) -> None:
        other_gates = self._other_gates
        n = len(data)
        digits = -1
        for k, (search, rec, needs, min_digits, min_length, min_colons) in enumerate(self._other):
            bit = other_gates[k]
            if bit:
                if gates & bit:  # the gate is a necessary condition; no Python gates needed
                    _scan_loop(search, rec, data, n, found)
                continue
            # not compiled (custom, hand-made): the Python gates, then the search
            if needs:
                for needle in needs:
                    if needle in data:
                        break
                else:
                    continue
            if n < min_length or (min_colons and data.count(b":") < min_colons):
                continue
            if min_digits:
                if digits < 0:
                    digits = n - len(data.translate(None, _DIGITS))
                if digits < min_digits:
                    continue
            _scan_loop(search, rec, data, n, found)

    def _digits_at(self, data: bytes, cands: dict[int, int], found: list) -> None:
        """`_scan_digits` with the search replaced by the candidate positions.

        The search returns the first position at or after `pos` where one of the
        digit patterns matches, trying them in order; every such position is a
        candidate whose mask names the recognizers that can match there (the
        others cannot), so trying those in order at each candidate is the same.
        """
        by_mask = self._by_mask
        pos = 0
        for at in sorted(cands) if len(cands) > 1 else cands:
            if at < pos:
                continue
            mask = cands[at]
            recs = by_mask.get(mask)
            if recs is None:
                recs = by_mask[mask] = tuple(
                    r for k, r in enumerate(self._digit_recs) if mask >> k & 1
                )
            for rec in recs:
                m = rec.compiled.match(data, at)
                if m is None:
                    continue
                start = at - rec.lead_back
                end = m.end()
                validator = rec.validator
                accepted = validator(data[start:end]) if validator is not None else end - start
                if accepted:
                    found.append((rec.entity, start, start + accepted))
                    pos = start + accepted
                    break
                # rejected: another digit recognizer may match at this very digit
                _first_other_match(recs, rec, data, at, found)
                pos = at + 1
                break

    def spans_python(self, data: bytes) -> list[tuple[str, int, int]]:
        """`spans()` by the pure-Python path (the reference for the compiled one)."""
        n = len(data)
        found: list[tuple[str, int, int]] = []
        digits = -1
        if self._digit is not None:
            digits = n - len(data.translate(None, _DIGITS))
            if digits >= self._digit_min:
                self._scan_digits(data, found)
        if self._email is not None and 64 in data:
            self._scan_email(data, found)
        if self._password:
            _scan_password(data, found)
        for search, rec, needs, min_digits, min_length, min_colons in self._other:
            if needs:
                for needle in needs:
                    if needle in data:
                        break
                else:
                    continue
            if n < min_length or (min_colons and data.count(b":") < min_colons):
                continue
            if min_digits:
                if digits < 0:
                    digits = n - len(data.translate(None, _DIGITS))
                if digits < min_digits:
                    continue
            _scan_loop(search, rec, data, n, found)
        return self._finish(data, found)

    def _finish(self, data: bytes, found: list) -> list[tuple[str, int, int]]:
        """Split at NUL (custom patterns), sort, de-overlap: earliest, then longest wins."""
        if self._custom and 0 in data:
            found = _split_at_nul(data, found)
        if len(found) < 2:
            return found
        found.sort(key=_start)  # stable: equal starts keep the order they were found in
        last_end = -1
        for f in found:  # the common case: nothing overlaps, nothing to drop
            if f[1] < last_end:
                break
            last_end = f[2]
        else:
            return found
        kept = [found[0]]
        last_start = found[0][1]
        last_end = found[0][2]
        for f in found[1:]:
            if f[1] >= last_end:
                kept.append(f)
                last_start = f[1]
                last_end = f[2]
            elif f[1] == last_start and f[2] > last_end:
                # same start, longer: it sorts first under (start, longest first)
                kept[-1] = f
                last_end = f[2]
        return kept

    def _scan_digits(self, data: bytes, found: list[tuple[str, int, int]]) -> None:
        search, recs = self._digit
        groups = self._groups
        pos = 0
        while True:
            m = search(data, pos)
            if m is None:
                return
            rec = groups[m.lastgroup]  # type: ignore[index]
            at, end = m.span()
            start = at - rec.lead_back
            validator = rec.validator
            accepted = validator(data[start:end]) if validator is not None else end - start
            if accepted:
                found.append((rec.entity, start, start + accepted))
                pos = start + accepted
                continue
            # rejected: another digit recognizer may match at this very digit
            _first_other_match(recs, rec, data, at, found)
            pos = at + 1

    def _scan_email(self, data: bytes, found: list[tuple[str, int, int]]) -> None:
        match = self._email.compiled.match  # type: ignore[union-attr]
        at = data.find(64)
        floor = 0
        while at >= 0:
            lo = max(floor, at - 64)
            start = lo + len(data[lo:at].rstrip(_EMAIL_LOCAL))
            if start < at:
                m = match(data, start)
                if m is not None:
                    found.append(("EMAIL_ADDRESS", start, m.end()))
                    floor = m.end()
                    at = data.find(64, floor)
                    continue
            at = data.find(64, at + 1)


def _scan_password(data: bytes, found: list[tuple[str, int, int]]) -> None:
    """`password=...`, `pwd: ...`, `"secret": "..."`, SQL `PASSWORD '...'`, URL credentials."""
    if 61 in data or 58 in data:  # '=' or ':'
        search = _PW_SEP.search
        key = _PW_KEY_REV.match
        value = _PW_VALUE.match
        pos = 0
        while True:
            m = search(data, pos)
            if m is None:
                break
            p = m.start()
            if key(data[p - 1 : (p - 70 if p > 70 else None) : -1] if p else b""):
                v = value(data, p + 1)
                if v is not None:
                    found.append(("PASSWORD_PAIR", v.start("v"), v.end("v")))
                    pos = v.end()
                    continue
            pos = p + 1
        if b"://" in data:
            for m in _PW_URL.finditer(data):
                found.append(("PASSWORD_PAIR", m.start("v"), m.end("v")))
    if 39 in data:  # "'"
        for m in _PW_SQL.finditer(data):
            if m.end("v") > m.start("v"):
                found.append(("PASSWORD_PAIR", m.start("v"), m.end("v")))


def _gate_tuple(r: Recognizer) -> tuple:
    return (r.compiled.search, r, r.needs, r.min_digits, r.min_length, r.min_colons)


_start = itemgetter(1)


def _split_at_nul(data: bytes, found: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Findings never span a NUL (the masker's value separator): split those that do."""
    out = []
    for entity, s, e in found:
        cut = data.find(0, s, e)
        while cut != -1:
            if cut > s:
                out.append((entity, s, cut))
            s = cut + 1
            cut = data.find(0, s, e)
        if e > s:
            out.append((entity, s, e))
    return out


def _scan_loop(search, rec: Recognizer, data: bytes, n: int, found: list) -> None:
    pos = 0
    while pos <= n:
        m = search(data, pos)
        if m is None:
            return
        hit = _validated(rec, m)
        if hit is None:
            pos = m.start() + 1  # rejected: a real one may start inside it
            continue
        found.append(hit[0])
        pos = max(hit[1], m.start() + 1)


def _validated(rec: Recognizer, m: re.Match[bytes]) -> tuple[tuple[str, int, int], int] | None:
    start, end = m.span()
    if rec.validator is not None:
        accepted = rec.validator(m.group())
        if not accepted:
            return None
        end = start + accepted
    resume = end
    if rec.value_groups:
        for g in rec.value_groups:
            s = m.start(g)
            if s >= 0:
                start, end = s, m.end(g)
                break
        if start == end:
            return None
    return (rec.entity, start, end), resume


def _first_other_match(
    recs: Sequence[Recognizer], rejected: Recognizer, data: bytes, at: int, found: list
) -> None:
    """After `rejected` matched at `at` but failed validation: the first other digit
    recognizer that matches and validates there is taken (both scan paths share this)."""
    for other in recs:
        if other is rejected:
            continue
        m = other.compiled.match(data, at)
        if m is not None:
            start = at - other.lead_back
            end = m.end()
            v = other.validator
            ok = v(data[start:end]) if v is not None else end - start
            if ok:
                found.append((other.entity, start, start + ok))
                return
