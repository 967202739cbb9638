"""Masking strategies: what a sensitive span becomes.

Theory of operation: `replacer(entity, strategy, token_key)` returns a function
`bytes -> bytes` built once per plan, so the hot path calls one prepared closure
per finding. Outputs are ASCII and never contain a quote, backslash, tab,
newline or NUL, so a masked span can be dropped into a JSON string, a COPY text
line, a PostgreSQL error message or an array literal without re-escaping.

Output formats (documented in docs/masking.md):

- redact: `[LABEL]` with a fixed label per entity (`[EMAIL]`, `[CREDIT_CARD]`,
  `[SSN]`, ...); a column rule gives `[REDACTED]`.
- partial: keeps a little of the value and the punctuation, stars the rest:
  card `**** **** **** 4242` (separators kept, last four digits shown), SSN
  `***-**-6789`, IBAN `DE******************3000`, email `j***@example.com`,
  IP `192.168.*.*` / first IPv6 group then `:*`, phone last four digits; secrets
  are never partially shown (they are redacted); a column rule keeps the last
  four letters/digits when the value has at least eight, else stars them all.
- token: `tok_<label>_<16 hex>`, the first 8 bytes of HMAC-SHA-256(key,
  entity-normalised value); one value gives one token under one key, so joins
  still work, and a different key gives different tokens.
- hash: `sha256_<16 hex>`, the first 8 bytes of SHA-256 of the normalised
  value; unkeyed, so guessable for small spaces (an SSN): prefer `token`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from wardgate.masking.recognizers import SECRET_ENTITIES

__all__ = [
    "STRATEGIES",
    "STRATEGY_STRENGTH",
    "COLUMN_LABEL",
    "label_for",
    "normalise",
    "replacer",
]

STRATEGIES = ("redact", "token", "hash", "partial")
# When several rules cover the same entity or column, the strongest wins.
STRATEGY_STRENGTH = {"redact": 3, "token": 2, "hash": 1, "partial": 0}

COLUMN_LABEL = "REDACTED"
_LABELS = {
    "EMAIL_ADDRESS": "EMAIL",
    "US_SSN": "SSN",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "PHONE_NUMBER": "PHONE",
    "PASSWORD_PAIR": "PASSWORD",
}
_NON_DIGITS = bytes(c for c in range(256) if not 0x30 <= c <= 0x39)
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def label_for(entity: str | None) -> str:
    """The redaction label of an entity (`None`: a column rule)."""
    if entity is None:
        return COLUMN_LABEL
    return _LABELS.get(entity, entity)


def normalise(entity: str | None, value: bytes) -> bytes:
    """The form of a value that tokens and hashes are computed over.

    Cards, SSNs and phone numbers: digits only; IBANs: no spaces, upper case;
    emails: lower case. So `4242 4242 4242 4242` and `4242-4242-4242-4242`
    give one token.
    """
    if entity in ("CREDIT_CARD", "US_SSN", "PHONE_NUMBER"):
        return value.translate(None, _NON_DIGITS)
    if entity == "IBAN_CODE":
        return value.replace(b" ", b"").upper()
    if entity == "EMAIL_ADDRESS":
        return value.lower()
    return value


_STAR_DIGITS = bytes(0x2A if 0x30 <= c <= 0x39 else c for c in range(256))
_STAR_ALNUM = bytes(
    0x2A if c in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" else c
    for c in range(256)
)


def _star_keep_last(value: bytes, keep: int, *, digits_only: bool) -> bytes:
    """Replace letters/digits with '*' except the last `keep`, punctuation kept."""
    table = _STAR_DIGITS if digits_only else _STAR_ALNUM
    if keep == 0:
        return value.translate(table)
    if len(value) > keep:
        tail = value[-keep:]
        # the common case (a card or SSN ending in four digits): no walk
        if tail.isdigit() if digits_only else tail.isalnum():
            return value[:-keep].translate(table) + tail
    # walk back over the last `keep` kept characters (a few steps), star the rest
    i = len(value)
    kept = 0
    while i > 0 and kept < keep:
        i -= 1
        if value[i] != table[value[i]]:
            kept += 1
    return value[:i].translate(table) + value[i:]


def _star_keep_last_slow(value: bytes, keep: int, *, digits_only: bool) -> bytes:
    """Reference implementation of `_star_keep_last` (used by the tests)."""
    out = bytearray(value)
    kept = 0
    for i in range(len(out) - 1, -1, -1):
        c = out[i]
        if digits_only and not 0x30 <= c <= 0x39:
            continue
        if not digits_only and c not in _ALNUM:
            continue
        if kept < keep:
            kept += 1
        else:
            out[i] = 0x2A
    return bytes(out)


def _partial(entity: str | None, value: bytes) -> bytes:
    if entity in ("CREDIT_CARD", "US_SSN", "PHONE_NUMBER"):
        return _star_keep_last(value, 4, digits_only=True)
    if entity == "IBAN_CODE":
        return value[:2] + _star_keep_last(value[2:], 4, digits_only=False)
    if entity == "EMAIL_ADDRESS":
        local, _, domain = value.rpartition(b"@")
        return local[:1] + b"***@" + domain
    if entity == "IP_ADDRESS":
        if b":" in value:
            return value.split(b":", 1)[0] + b":*"
        parts = value.split(b".")
        return b".".join(parts[:2] + [b"*"] * (len(parts) - 2))
    if entity is None:
        alnum = sum(1 for c in value if c in _ALNUM)
        return _star_keep_last(value, 4 if alnum >= 8 else 0, digits_only=False)
    # secrets and custom entities: nothing of them is shown
    return b"[" + label_for(entity).encode() + b"]"


# `native_form` of a replacer that stars every digit but the last four (masking/native.py)
LAST_FOUR_DIGITS = 2


def replacer(
    entity: str | None, strategy: str, token_key: bytes | None = None
) -> Callable[[bytes], bytes]:
    """A function turning one sensitive value (or span) into its masked form.

    Where the C row masker can compute the output itself, the function carries a
    `native_form`: the constant output (bytes) or `LAST_FOUR_DIGITS`.
    """
    label = label_for(entity)
    if strategy == "redact" or (strategy == "partial" and entity in SECRET_ENTITIES):
        constant = b"[" + label.encode() + b"]"

        def redact(value: bytes) -> bytes:
            return constant

        redact.native_form = constant  # type: ignore[attr-defined]
        return redact
    if strategy == "partial":
        if entity in ("CREDIT_CARD", "US_SSN", "PHONE_NUMBER"):
            # the hot case (cards by default): `_partial` without its dispatch
            def last_four(value: bytes) -> bytes:
                tail = value[-4:]
                if len(value) > 4 and tail.isdigit():
                    return value[:-4].translate(_STAR_DIGITS) + tail
                return _star_keep_last(value, 4, digits_only=True)

            last_four.native_form = LAST_FOUR_DIGITS  # type: ignore[attr-defined]
            return last_four
        return lambda value: _partial(entity, value)
    if strategy == "token":
        if not token_key:
            raise ValueError("the token strategy needs masking.token_key")
        prefix = b"tok_" + label.lower().encode() + b"_"
        key = token_key
        salt = (entity or "column").encode() + b"\x00"
        new = hmac.new

        def token(value: bytes) -> bytes:
            digest = new(key, salt + normalise(entity, value), hashlib.sha256).hexdigest()
            return prefix + digest[:16].encode()

        return token
    if strategy == "hash":
        sha = hashlib.sha256

        def hash_(value: bytes) -> bytes:
            return b"sha256_" + sha(normalise(entity, value)).hexdigest()[:16].encode()

        return hash_
    raise ValueError(f"unknown masking strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
