"""Strategies: exact output formats, token determinism, key separation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.masking.strategies import _star_keep_last, _star_keep_last_slow, normalise, replacer


def test_redact_labels() -> None:
    assert replacer("EMAIL_ADDRESS", "redact")(b"a@b.com") == b"[EMAIL]"
    assert replacer("CREDIT_CARD", "redact")(b"4111111111111111") == b"[CREDIT_CARD]"
    assert replacer("US_SSN", "redact")(b"123-45-6780") == b"[SSN]"
    assert replacer("PASSWORD_PAIR", "redact")(b"x") == b"[PASSWORD]"
    assert replacer(None, "redact")(b"anything") == b"[REDACTED]"


@pytest.mark.parametrize(
    ("entity", "value", "masked"),
    [
        ("CREDIT_CARD", b"4242424242424242", b"************4242"),
        ("CREDIT_CARD", b"4242 4242 4242 4242", b"**** **** **** 4242"),
        ("CREDIT_CARD", b"3782-822463-10005", b"****-******-*0005"),
        ("US_SSN", b"123-45-6780", b"***-**-6780"),
        ("IBAN_CODE", b"DE89370400440532013000", b"DE" + b"*" * 16 + b"3000"),
        ("EMAIL_ADDRESS", b"john@example.com", b"j***@example.com"),
        ("IP_ADDRESS", b"192.168.10.24", b"192.168.*.*"),
        ("IP_ADDRESS", b"2001:db8::1", b"2001:*"),
        ("JWT", b"eyJ...", b"[JWT]"),  # secrets are never partially shown
        (None, b"123456789", b"*****6789"),
        (None, b"abc", b"***"),
    ],
)
def test_partial(entity: str | None, value: bytes, masked: bytes) -> None:
    assert replacer(entity, "partial")(value) == masked


def test_star_keep_last_matches_reference() -> None:
    for value in [b"", b"1", b"12-34", b"4242 4242 4242 4242", b"ab-cd-ef-gh-12", b"--"]:
        for keep in (0, 4):
            for digits_only in (True, False):
                assert _star_keep_last(
                    value, keep, digits_only=digits_only
                ) == _star_keep_last_slow(value, keep, digits_only=digits_only)


def test_token_is_deterministic_per_key_and_differs_between_keys() -> None:
    a = replacer("EMAIL_ADDRESS", "token", b"key-a")
    b = replacer("EMAIL_ADDRESS", "token", b"key-b")
    t1 = a(b"John@Example.com")
    assert re.fullmatch(rb"tok_email_[0-9a-f]{16}", t1)
    assert a(b"john@example.com") == t1  # normalised: case
    assert b(b"john@example.com") != t1
    assert a(b"jane@example.com") != t1


def test_card_token_ignores_formatting() -> None:
    tok = replacer("CREDIT_CARD", "token", b"k")
    assert tok(b"4111 1111 1111 1111") == tok(b"4111-1111-1111-1111") == tok(b"4111111111111111")


def test_hash_format() -> None:
    h = replacer("US_SSN", "hash")(b"123-45-6780")
    assert re.fullmatch(rb"sha256_[0-9a-f]{16}", h)
    assert h == replacer("US_SSN", "hash")(b"123 45 6780")


def test_token_without_key_and_unknown_strategy_fail() -> None:
    with pytest.raises(ValueError):
        replacer("EMAIL_ADDRESS", "token", None)
    with pytest.raises(ValueError):
        replacer("EMAIL_ADDRESS", "scramble")


def test_outputs_are_safe_in_json_copy_and_sql() -> None:
    for strategy in ("redact", "partial", "token", "hash"):
        out = replacer("EMAIL_ADDRESS", strategy, b"k")(b'we"ird\\@x.com')
        assert not set(out) & set(b"'\"\\\t\n\r\x00")
    assert normalise("IBAN_CODE", b"de89 3704") == b"DE893704"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24) | st.text(alphabet="0123456789 -x", max_size=24).map(str.encode))
def test_partial_last_four_shortcut_equals_reference(value: bytes) -> None:
    for entity in ("CREDIT_CARD", "US_SSN", "PHONE_NUMBER"):
        assert replacer(entity, "partial")(value) == _star_keep_last_slow(
            value, 4, digits_only=True
        )
