"""Recognizers: which byte spans of a value are sensitive, and of what kind.

Theory of operation: every recognizer is a loose regular expression over ASCII
bytes plus an optional validator (Luhn, IBAN mod 97, SSN rules, IPv6 parse) and a
few cheap *gates*: facts a value must show before the expression runs at all (it
contains "@", it has at least 13 digits, it has two colons, the shared secrets
trigger matches). Gates are C-level bytes operations (`in`, `count`,
`translate`), so a value holding nothing sensitive costs a handful of them and
no allocation beyond one digit count. The masker works on the wire bytes.

Patterns start with a literal or a character class, never with a look-behind,
so that the regular expression engine skips in C to a possible first byte; the
"do not start inside a run" look-behind comes right after that first byte,
which also keeps each scan linear. A candidate the validator rejects does not
end the scan: it resumes one byte after the candidate's start, so a 16-digit
card after a 4-digit prefix ("1234 4111 1111 1111 1111") is still found. Spans
found by several recognizers are de-overlapped (earliest, then longest wins).

All patterns are ASCII and never match a NUL byte, so they work unchanged on
UTF-8 text (multi-byte sequences never match an ASCII class) and on the raw
bytes of binary values.

Custom entities (config) are a user regular expression with an optional
validator, or a word list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from wardgate.masking.validators import (
    IBAN_LENGTHS,
    card_brand_ok,
    card_valid,
    digits_only,
    iban_valid,
    ipv6_valid,
    luhn_valid,
    ssn_valid,
)

__all__ = [
    "BUILTIN_ENTITIES",
    "SECRET_ENTITIES",
    "Finding",
    "Recognizer",
    "builtin_recognizers",
    "custom_recognizer",
    "VALIDATORS",
]

Validator = Callable[[bytes], int]
"""Returns how many bytes of the candidate are accepted (0: rejected)."""

_DIGITS = b"0123456789"


@dataclass(frozen=True, slots=True)
class Finding:
    entity: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Recognizer:
    """One way to find an entity: a bytes pattern, a validator, and cheap gates.

    `value_groups` names groups of the pattern that hold the sensitive part (a
    `password=` pair masks only what follows the `=`); without them the whole
    match is sensitive. The gates (`needs`, `min_digits`, `min_length`,
    `min_colons`, `secret`) are necessary conditions checked with C-level bytes
    operations before the pattern runs at all.
    """

    entity: str
    pattern: bytes
    validator: Validator | None = None
    value_groups: tuple[str, ...] = ()
    flags: int = 0
    # the value must contain one of these (bytes: a substring; int: a byte)
    needs: tuple[bytes | int, ...] = ()
    min_digits: int = 0
    min_length: int = 0
    min_colons: int = 0
    # "secret": gated by the shared GATE_SECRET expression; "digit": the pattern is
    # rb"\d" + `rest` and runs in the shared digit pass; "email": anchored on "@"
    kind: str = ""  # "custom": a config entity, whose pattern may match a NUL byte
    rest: bytes = b""
    lead_back: int = 0  # digit pass: the entity starts this many bytes before the digit
    compiled: re.Pattern[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(ascii_classes(self.pattern), self.flags))

    def find(self, data: bytes) -> list[Finding]:
        from wardgate.masking.scanner import Scanner

        return Scanner([self]).find(data)


_CLASS_IN = {ord("d"): b"0-9", ord("w"): b"A-Za-z0-9_", ord("s"): b" \\t\\n\\r\\f\\v"}


def ascii_classes(pattern: bytes) -> bytes:
    """Spell `\\d`, `\\w`, `\\s` as explicit ranges (same meaning for bytes patterns).

    The regular expression engine turns ranges into a bitmap but tests a category
    such as `\\d` byte by byte through a slower path: about twice as fast.
    """
    out = bytearray()
    i, n = 0, len(pattern)
    depth = 0  # inside [...]
    while i < n:
        c = pattern[i]
        if c == 0x5C and i + 1 < n:  # backslash
            d = pattern[i + 1]
            if d in _CLASS_IN:
                out += _CLASS_IN[d] if depth else b"[" + _CLASS_IN[d] + b"]"
            else:
                out += pattern[i : i + 2]
            i += 2
            continue
        if c == 0x5B and not depth:  # '['
            depth = 1
            out.append(c)
            i += 1
            if i < n and pattern[i] == 0x5E:  # '^'
                out.append(0x5E)
                i += 1
            if i < n and pattern[i] == 0x5D:  # a leading ']' is a literal
                out.append(0x5D)
                i += 1
            continue
        if c == 0x5D and depth:
            depth = 0
        out.append(c)
        i += 1
    return bytes(out)


def _accept_all(check: Callable[[bytes], bool]) -> Validator:
    def validate(candidate: bytes) -> int:
        return len(candidate) if check(candidate) else 0

    return validate


def _iban_validator(candidate: bytes) -> int:
    """Accept an IBAN, trimming trailing space-separated text the regex swallowed."""
    compact = candidate.replace(b" ", b"")
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) > expected:
        # walk the candidate until `expected` non-space bytes have been seen
        seen = 0
        cut = len(candidate)
        for i, c in enumerate(candidate):
            if c != 0x20:
                seen += 1
                if seen == expected:
                    cut = i + 1
                    break
        if cut < len(candidate) and candidate[cut] != 0x20:
            return 0  # the IBAN would end inside a group
        candidate = candidate[:cut]
        compact = compact[:expected]
    return len(candidate) if iban_valid(compact) else 0


def _card_validator(candidate: bytes) -> int:
    """Accept a card number; if the run is longer (a number follows after a space
    or dash), try the shorter prefixes that end at a separator."""
    digits = candidate if candidate.isdigit() else digits_only(candidate)
    if card_brand_ok(digits) and luhn_valid(digits):  # card_valid(), one call less
        return len(candidate)
    for i in range(len(candidate) - 1, 11, -1):
        if candidate[i] in (0x20, 0x2D) and card_valid(candidate[:i]):
            return i
    return 0


def _ipv4_validator(candidate: bytes) -> int:
    for octet in candidate.split(b"."):
        if len(octet) > 1 and octet[0] == 0x30 or int(octet) > 255:
            return 0
    return len(candidate)


def _ipv6_validator(candidate: bytes) -> int:
    if candidate.count(b":") < 2 or candidate.strip(b":") == b"":
        return 0
    return len(candidate) if ipv6_valid(candidate) else 0


def _luhn_digits(candidate: bytes) -> bool:
    return luhn_valid(digits_only(candidate))


VALIDATORS: dict[str, Validator | None] = {
    "none": None,
    "luhn": _accept_all(_luhn_digits),
    "iban": _iban_validator,
    "card": _accept_all(card_valid),
    "ssn": _accept_all(ssn_valid),
}

_H = rb"[0-9A-Fa-f]{1,4}"
_PW_KEYS = (
    rb"aws_secret_access_key|client_secret|secret_key|access_?token|auth_?token|api_?key"
    rb"|password|passwd|passphrase|pwd|pass|secret"
)

_PW_KEY_LIST = (
    b"aws_secret_access_key", b"client_secret", b"secret_key", b"access_token",
    b"accesstoken", b"auth_token", b"authtoken", b"api_key", b"apikey", b"password",
    b"passwd", b"passphrase", b"pwd", b"pass", b"secret",
)  # fmt: skip
# `key = value` pairs are found from their separator: the bytes before it, reversed,
# must be a key (one anchored match), then the value is matched after it.
_PW_SEP = re.compile(rb"[:=]")
_PW_KEY_REV = re.compile(
    rb"[ \t]{0,8}[\"']?(?:"
    + b"|".join(re.escape(k[::-1]) for k in sorted(_PW_KEY_LIST, key=len, reverse=True))
    + rb")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_PW_VALUE = re.compile(rb"[ \t]{0,8}[\"']?(?P<v>(?:[^\s\"'&;,\x00]|[&;,](?![\w.-]{1,64}=)){1,256})")
_PW_SQL = re.compile(rb"(?i:(?<![A-Za-z0-9])password[ \t]{1,8})'(?P<v>(?:[^'\x00]|'')*)'")
_PW_URL = re.compile(rb"(?<=://)[^\s:/@\x00]{1,128}:(?P<v>[^\s/@\x00]{1,256})@")

_BUILTIN: dict[str, tuple[Recognizer, ...]] = {}
_IBAN_REST = rb"(?<=(?<![A-Za-z0-9])[A-Z]{2}\d)\d(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"
_CARD_REST = rb"(?<=[1-68])(?<!\d\d)(?:[ -]?\d){12,18}(?!\d)"
_SSN_REST = rb"(?<![\d-]\d)\d{2}(?P<wg_ssn>[- .])\d{2}(?P=wg_ssn)\d{4}(?![\d-]|\.\d)"
_IPV4_REST = rb"(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\w)"
# The local part of an email address, for the walk back from its "@".
_EMAIL_LOCAL = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.%+-"


def _add(*recs: Recognizer) -> None:
    _BUILTIN[recs[0].entity] = recs


# Patterns start with a literal or a character class (never with a look-behind) so
# that the regular expression engine can skip ahead to a possible first byte in C;
# the "not inside a run" look-behind comes right after the first byte.
_add(
    Recognizer(
        "PRIVATE_KEY",
        rb"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----[^\x00]*?"
        rb"(?:-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z|(?=\x00))",
        needs=(b"-----BEGIN",),
        kind="secret",
    )
)
_add(
    Recognizer(
        "JWT",
        rb"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
        needs=(b"eyJ",),
        kind="secret",
    )
)
_add(
    Recognizer(
        "AWS_ACCESS_KEY",
        rb"A(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])(?<![A-Za-z0-9][\s\S]{4})[A-Z0-9]{16}(?![A-Za-z0-9])",
        needs=(b"AKIA", b"ASIA", b"ABIA", b"ACCA", b"A3T"),
        kind="secret",
    )
)
_add(
    Recognizer(
        "GITHUB_TOKEN",
        rb"gh[pousr]_(?<![A-Za-z0-9]gh[pousr]_)[A-Za-z0-9]{36,251}(?![A-Za-z0-9])"
        rb"|github_pat_(?<![A-Za-z0-9]github_pat_)[A-Za-z0-9_]{22,247}(?![A-Za-z0-9])",
        needs=(b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_"),
        kind="secret",
    )
)
_add(
    Recognizer(
        "SLACK_TOKEN",
        rb"xox[abposre]-(?<![\w-]xox[abposre]-)[A-Za-z0-9-]{10,250}"
        rb"|xapp-(?<![\w-]xapp-)\d-[A-Za-z0-9-]{10,250}"
        rb"|https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}",
        needs=(b"xox", b"xapp-", b"hooks.slack"),
        kind="secret",
    )
)
_add(
    Recognizer(
        "STRIPE_KEY",
        rb"sk_(?:live|test)_(?<![A-Za-z0-9]sk_live_)(?<![A-Za-z0-9]sk_test_)[A-Za-z0-9]{16,247}(?![A-Za-z0-9])"
        rb"|rk_(?:live|test)_(?<![A-Za-z0-9]rk_live_)(?<![A-Za-z0-9]rk_test_)[A-Za-z0-9]{16,247}(?![A-Za-z0-9])"
        rb"|whsec_(?<![A-Za-z0-9]whsec_)[A-Za-z0-9]{24,247}(?![A-Za-z0-9])",
        needs=(b"k_live_", b"k_test_", b"whsec_"),
        kind="secret",
    )
)
_add(
    Recognizer(
        "PASSWORD_PAIR",
        rb"(?i:(?<![A-Za-z0-9])(?:" + _PW_KEYS + rb")[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?)"
        rb"(?P<wg_pw1>(?:[^\s\"'&;,\x00]|[&;,](?![\w.-]{1,64}=)){1,256})"
        rb"|(?i:(?<![A-Za-z0-9])password[ \t]{1,8})'(?P<wg_pw2>(?:[^'\x00]|'')*)'"
        rb"|(?<=://)[^\s:/@\x00]{1,128}:(?P<wg_pw3>[^\s/@\x00]{1,256})@",
        value_groups=("wg_pw1", "wg_pw2", "wg_pw3"),
        kind="password",
    )
)
_add(
    Recognizer(
        "EMAIL_ADDRESS",
        rb"[\w.%+-](?<![\w.%+-][\w.%+-])[\w.%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        rb"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}(?![\w-])",
        needs=(64,),
        kind="email",
    )
)
_add(
    Recognizer(
        "IBAN_CODE",
        rb"\d" + _IBAN_REST,
        validator=_iban_validator,
        min_digits=4,
        kind="digit",
        rest=_IBAN_REST,
        lead_back=2,
    )
)
_add(
    Recognizer(
        "CREDIT_CARD",
        rb"\d" + _CARD_REST,
        validator=_card_validator,
        min_digits=13,
        kind="digit",
        rest=_CARD_REST,
    )
)
_add(
    Recognizer(
        "US_SSN",
        rb"\d" + _SSN_REST,
        validator=VALIDATORS["ssn"],
        min_digits=9,
        kind="digit",
        rest=_SSN_REST,
    )
)
_add(
    Recognizer(
        "IP_ADDRESS",
        rb"\d" + _IPV4_REST,
        validator=_ipv4_validator,
        min_digits=4,
        needs=(46,),
        kind="digit",
        rest=_IPV4_REST,
    ),
    Recognizer(
        "IP_ADDRESS",
        rb"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])[0-9A-Fa-f:.]{1,44}(?:%[A-Za-z0-9_.]+)?(?![\w:])",
        validator=_ipv6_validator,
        min_colons=2,
    ),
)
_add(
    Recognizer(
        "PHONE_NUMBER",
        rb"(?<![\w+.-])(?:(?:\+?1|001)[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}"
        rb"(?:[ ]?(?:x|ext\.?)[ ]?\d{1,5})?(?![\w-])"
        rb"|(?<![\w+])\+[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)|\d{1,4})(?:[ .-]?\d{2,4}){2,4}(?![\w-])",
        min_digits=10,
    )
)

SECRET_ENTITIES: tuple[str, ...] = (
    "AWS_ACCESS_KEY",
    "PRIVATE_KEY",
    "JWT",
    "GITHUB_TOKEN",
    "SLACK_TOKEN",
    "STRIPE_KEY",
    "PASSWORD_PAIR",
)
BUILTIN_ENTITIES: tuple[str, ...] = tuple(_BUILTIN)


def builtin_recognizers(entity: str) -> tuple[Recognizer, ...]:
    """The built-in recognizers for `entity` (KeyError if there are none)."""
    return _BUILTIN[entity]


def custom_recognizer(
    name: str,
    *,
    regex: str | None = None,
    validator: str = "none",
    words: Iterable[str] = (),
    ignore_case: bool | None = None,
) -> Recognizer:
    """A config-defined entity: a regular expression (+ validator) or a word list.

    The expression runs over UTF-8 bytes (character classes are ASCII); the
    whole match is masked. Word lists match whole words, case-insensitively
    unless `ignore_case` is False.
    """
    if validator not in VALIDATORS:
        raise ValueError(f"unknown validator {validator!r} (one of {sorted(VALIDATORS)})")
    words = [w for w in words if w]
    if regex and words:
        raise ValueError(f"custom entity {name}: give a regex or words, not both")
    if regex:
        flags = re.IGNORECASE if ignore_case else 0
        return Recognizer(
            name, regex.encode("utf-8"), VALIDATORS[validator], flags=flags, kind="custom"
        )
    if words:
        flags = 0 if ignore_case is False else re.IGNORECASE
        alternation = b"|".join(
            re.escape(w.encode("utf-8")) for w in sorted(words, key=len, reverse=True)
        )
        return Recognizer(
            name,
            rb"(?<![\w])(?:" + alternation + rb")(?![\w])",
            VALIDATORS[validator],
            flags=flags,
            kind="custom",
        )
    raise ValueError(f"custom entity {name}: needs a regex or words")
