"""Each recognizer: positives, negatives and edge cases."""

from __future__ import annotations

import pytest

from wardgate.masking.recognizers import (
    BUILTIN_ENTITIES,
    builtin_recognizers,
    custom_recognizer,
)
from wardgate.masking.scanner import Scanner
from wardgate.masking.validators import card_valid, iban_valid, luhn_valid, ssn_valid

ALL = Scanner([r for e in BUILTIN_ENTITIES for r in builtin_recognizers(e)])


def found(text: str, scanner: Scanner = ALL) -> list[tuple[str, str]]:
    data = text.encode()
    return [(f.entity, data[f.start : f.end].decode()) for f in scanner.find(data)]


def only(entity: str) -> Scanner:
    return Scanner(builtin_recognizers(entity))


# -- cards ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",  # Amex, 15 digits
        "3782 822463 10005",
        "5555555555554444",  # Mastercard
        "2223003122003222",  # Mastercard 2-series
        "6011111111111117",  # Discover
        "3530111333300000",  # JCB
        "36227206271667",  # Diners, 14 digits
        "6200000000000005",  # UnionPay
        "4222222222222",  # Visa 13
        "4111111111111111110",  # 19 digits, Luhn-valid Visa
    ],
)
def test_card_positives(card: str) -> None:
    assert found(f"paid with {card}.", only("CREDIT_CARD")) == [("CREDIT_CARD", card)]


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",
        "978-3-16-148410-0",  # ISBN-13
        "1700000000000",  # epoch ms
        "9111111111111111",  # no brand starts with 9
        "41111111111111111111111",  # too long a run
        "order 12345678",
    ],
)
def test_card_negatives(text: str) -> None:
    assert found(text, only("CREDIT_CARD")) == []


def test_card_after_a_short_number_in_the_same_run_is_found() -> None:
    assert found("1234 4111 1111 1111 1111", only("CREDIT_CARD")) == [
        ("CREDIT_CARD", "4111 1111 1111 1111")
    ]


def test_luhn_and_brand_validators() -> None:
    assert luhn_valid(b"79927398713")
    assert not luhn_valid(b"79927398710")
    assert not luhn_valid(b"")
    assert card_valid(b"3782-822463-10005")
    assert not card_valid(b"3782822463100050")  # Amex must be 15


# -- emails --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "a@b.co",
        "john.smith+tag@mail.example.org",
        "X_Y%z@sub-domain.example.museum",
        "UPPER.Case@Example.COM",
    ],
)
def test_email_positives(email: str) -> None:
    assert found(f"mail {email}. thanks", only("EMAIL_ADDRESS")) == [("EMAIL_ADDRESS", email)]


@pytest.mark.parametrize("text", ["user@localhost", "@handle", "a@b", "x @ y.com", "me@-x.com"])
def test_email_negatives(text: str) -> None:
    assert found(text, only("EMAIL_ADDRESS")) == []


def test_email_in_sql_literal_keeps_quotes() -> None:
    assert found("where email = 'x@y.com'", only("EMAIL_ADDRESS")) == [("EMAIL_ADDRESS", "x@y.com")]


def test_two_emails_back_to_back() -> None:
    assert found("a@x.com,b@y.org", only("EMAIL_ADDRESS")) == [
        ("EMAIL_ADDRESS", "a@x.com"),
        ("EMAIL_ADDRESS", "b@y.org"),
    ]


# -- SSN -----------------------------------------------------------------------------


@pytest.mark.parametrize("ssn", ["123-45-6780", "001 01 0001", "772.33.4455"])
def test_ssn_positives(ssn: str) -> None:
    assert found(f"ssn {ssn} on file", only("US_SSN")) == [("US_SSN", ssn)]


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",
        "666-12-3456",
        "912-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123-45 6789",  # mixed separators
        "555-123-4567",  # phone
        "12345-6789",  # ZIP+4
        "2024-01-15",
        "123456789",  # bare nine digits are not scanned (use a column rule)
    ],
)
def test_ssn_negatives(text: str) -> None:
    assert found(text, only("US_SSN")) == []
    assert not ssn_valid(b"078-05-1120")


# -- IBAN ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "NL91ABNA0417164300",
        "FR1420041010050500013M02606",
    ],
)
def test_iban_positives(iban: str) -> None:
    assert found(f"pay to {iban} USD", only("IBAN_CODE")) == [("IBAN_CODE", iban)]


@pytest.mark.parametrize(
    "text", ["DE89370400440532013001", "DE8937040044053201300", "XX00ABCDEFGHIJKLMNO"]
)
def test_iban_negatives(text: str) -> None:
    assert found(text, only("IBAN_CODE")) == []
    assert not iban_valid(b"GB82WEST1234569876543")


# -- IP addresses --------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    ["10.0.0.1", "192.168.100.254", "::1", "2001:db8::ff00:42:8329", "fe80::1%eth0",
     "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:192.0.2.128"],
)  # fmt: skip
def test_ip_positives(ip: str) -> None:
    assert found(f"from {ip} at noon", only("IP_ADDRESS")) == [("IP_ADDRESS", ip)]


@pytest.mark.parametrize(
    "text",
    ["1.2.3", "v1.2.3.4", "10.0.0.256", "12:30:45", "select 'a'::text, x::int", "01.02.03.04",
     "aa:bb:cc:dd:ee:ff"],
)  # fmt: skip
def test_ip_negatives(text: str) -> None:
    assert found(text, only("IP_ADDRESS")) == []


# -- secrets -------------------------------------------------------------------------

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKC\n-----END RSA PRIVATE KEY-----"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    ("entity", "secret"),
    [
        ("AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
        ("AWS_ACCESS_KEY", "ASIAY34FZKBOKMUTVV7A"),
        ("PRIVATE_KEY", PEM),
        ("JWT", JWT),
        ("GITHUB_TOKEN", "ghp_" + "a1B2" * 9),
        ("GITHUB_TOKEN", "github_pat_11ABCDEFG0123456789abc_" + "x" * 40),
        ("SLACK_TOKEN", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
        (
            "SLACK_TOKEN",
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        ),
        ("STRIPE_KEY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("STRIPE_KEY", "rk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    ],
)
def test_secret_positives(entity: str, secret: str) -> None:
    assert found(f"config: {secret} end", only(entity)) == [(entity, secret)]


def test_pem_without_end_is_masked_to_the_end() -> None:
    text = "key -----BEGIN PRIVATE KEY-----\nMIIE truncated"
    assert found(text, only("PRIVATE_KEY")) == [("PRIVATE_KEY", text[4:])]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("password=hunter2", "hunter2"),
        ("PWD: s3cr3t!", "s3cr3t!"),
        ("secret = abc&def", "abc&def"),
        ("user=app&password=p4ss&db=x", "p4ss"),
        ('{"db_password": "x:y;z"}', "x:y;z"),
        ("postgres://bob:s3cret@db.internal:5432/app", "s3cret"),
        ("ALTER ROLE bob PASSWORD 'it''s'", "it''s"),
        ("api_key=AbC123", "AbC123"),
    ],
)
def test_password_pairs_mask_only_the_value(text: str, value: str) -> None:
    assert found(text, only("PASSWORD_PAIR")) == [("PASSWORD_PAIR", value)]


@pytest.mark.parametrize(
    "text", ["bypass=3", "passenger: Bob", "the password is long", "ghp_short"]
)
def test_secret_negatives(text: str) -> None:
    assert found(text) == []


# -- phone (optional) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "phone", ["(555) 123-4567", "555-123-4567", "+1-555-123-4567x123", "+44 20 7946 0958"]
)
def test_phone_positives(phone: str) -> None:
    assert found(f"call {phone} now", only("PHONE_NUMBER")) == [("PHONE_NUMBER", phone)]


# -- custom entities -----------------------------------------------------------------


def test_custom_regex_with_validator() -> None:
    rec = custom_recognizer("LOYALTY_CARD", regex=r"LC-\d{16}", validator="none")
    assert found("card LC-0000111122223333 ok", Scanner([rec])) == [
        ("LOYALTY_CARD", "LC-0000111122223333")
    ]
    luhn = custom_recognizer("ACCOUNT", regex=r"\b\d{11}\b", validator="luhn")
    assert found("79927398713 79927398710", Scanner([luhn])) == [("ACCOUNT", "79927398713")]


def test_custom_word_list_is_whole_word_and_case_insensitive() -> None:
    rec = custom_recognizer("PROJECT", words=["Bluebird", "red fox"])
    assert found("bluebird and Red Fox, not bluebirds", Scanner([rec])) == [
        ("PROJECT", "bluebird"),
        ("PROJECT", "Red Fox"),
    ]


def test_custom_entity_needs_a_definition() -> None:
    with pytest.raises(ValueError):
        custom_recognizer("X")
    with pytest.raises(ValueError):
        custom_recognizer("X", regex="a", validator="bogus")


# -- scanning ------------------------------------------------------------------------


def test_mixed_text_finds_everything_in_order() -> None:
    text = "a@b.com 4111-1111-1111-1111 123-45-6780 DE89370400440532013000 AKIAIOSFODNN7EXAMPLE"
    assert [e for e, _ in found(text)] == [
        "EMAIL_ADDRESS",
        "CREDIT_CARD",
        "US_SSN",
        "IBAN_CODE",
        "AWS_ACCESS_KEY",
    ]


def test_non_ascii_text_around_entities() -> None:
    assert found("naïve café – x@y.fr – ünïcode") == [("EMAIL_ADDRESS", "x@y.fr")]


def test_nothing_in_plain_text() -> None:
    assert found("Jennifer Martinez, 742 Evergreen Terrace, Springfield") == []
