"""A labelled PII data set, generated at run time with Faker from a fixed seed.

Theory of operation: `generate(per_type, seed)` returns `Sample`s: a text and
the spans (entity, start, end) that must be masked in it. Every entity type gets
`per_type` positives (half bare values as a column would hold them, half inside
a short sentence), and there are `per_type` look-alike negatives: order numbers,
timestamps, epoch milliseconds, version strings, UUIDs, ISBNs, EAN-13 codes,
Luhn-failing card-like numbers, invalid SSNs, ZIP+4 codes, routing numbers,
hashes, prices, user agents. Nothing is committed but this generator: the same
seed gives the same set on every machine (Faker is pinned in pyproject.toml).

Also `mixed_rows(n, seed)`: rows of a 10-column customer table with mixed PII,
for the speed benchmark.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from faker import Faker

__all__ = ["ENTITY_TYPES", "Sample", "generate", "mixed_rows", "MIXED_COLUMNS"]

IBAN_LOCALES = [
    "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "en_GB", "pl_PL", "pt_PT", "fi_FI", "no_NO",
    "de_AT", "de_CH", "en_IE", "sv_SE", "da_DK", "cs_CZ", "sk_SK", "ro_RO", "hu_HU", "el_GR",
]  # fmt: skip
CARD_TYPES = [
    "amex", "diners", "discover", "jcb15", "jcb16", "mastercard", "visa13", "visa16", "visa19",
]  # fmt: skip
TEMPLATES = [
    "{}",
    "Contact: {}",
    "please use {} for the refund",
    "note from support - {} - verified by phone",
    '{{"value": "{}", "ok": true}}',
    "old value was {}; updated 2024-05-01",
]
ENTITY_TYPES = (
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "PHONE_NUMBER",
    "AWS_ACCESS_KEY",
    "PRIVATE_KEY",
    "JWT",
    "GITHUB_TOKEN",
    "SLACK_TOKEN",
    "STRIPE_KEY",
    "PASSWORD_PAIR",
)


@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    spans: tuple[tuple[str, int, int], ...]  # (entity, start, end); empty: a negative
    kind: str  # entity type or "NEGATIVE:<what>"


def _luhn_complete(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _group(number: str, sep: str, sizes: tuple[int, ...]) -> str:
    out, i = [], 0
    for s in sizes:
        if i >= len(number):
            break
        out.append(number[i : i + s])
        i += s
    if i < len(number):
        out.append(number[i:])
    return sep.join(out)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _generators(fake: Faker, rng: random.Random) -> dict[str, Callable[[], str]]:
    iban_fakers = [Faker(loc) for loc in IBAN_LOCALES]
    for i, f in enumerate(iban_fakers):
        f.seed_instance(rng.randrange(1 << 30) + i)

    def card() -> str:
        r = rng.random()
        if r < 0.1:
            number = _luhn_complete(rng, rng.choice(["50", "56", "58", "67"]), rng.choice([16, 19]))
        elif r < 0.15:
            number = _luhn_complete(rng, "62", 16)  # UnionPay
        else:
            number = fake.credit_card_number(rng.choice(CARD_TYPES))
        style = rng.random()
        if style < 0.5:
            return number
        sep = " " if style < 0.75 else "-"
        sizes = (4, 6, 5) if len(number) == 15 else (4, 4, 4, 4, 3)
        return _group(number, sep, sizes)

    def iban() -> str:
        value = rng.choice(iban_fakers).iban()
        return _group(value, " ", (4,) * 9) if rng.random() < 0.3 else value

    def ip() -> str:
        return fake.ipv4() if rng.random() < 0.6 else fake.ipv6()

    def pem() -> str:
        kind = rng.choice(["RSA ", "EC ", "", "OPENSSH ", "ENCRYPTED "])
        body = "\n".join(
            base64.b64encode(rng.randbytes(48)).decode() for _ in range(rng.randint(3, 8))
        )
        return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"

    def jwt() -> str:
        header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
        payload = {"sub": fake.uuid4(), "name": fake.name(), "iat": rng.randrange(1 << 31)}
        return ".".join(
            [
                _b64url(json.dumps(header).encode()),
                _b64url(json.dumps(payload).encode()),
                _b64url(rng.randbytes(32)),
            ]
        )

    def aws() -> str:
        return rng.choice(["AKIA", "ASIA"]) + _alnum(
            rng, 16, string.ascii_uppercase + string.digits
        )

    def github() -> str:
        if rng.random() < 0.8:
            return "gh" + rng.choice("pousr") + "_" + _alnum(rng, 36)
        return "github_pat_" + _alnum(rng, 22) + "_" + _alnum(rng, 59)

    def slack() -> str:
        kind = rng.choice("bpa")
        return f"xox{kind}-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**11, 10**12)}-{_alnum(rng, 24)}"

    def stripe() -> str:
        return rng.choice(["sk_live_", "sk_test_", "rk_live_"]) + _alnum(
            rng, rng.choice([24, 32, 99])
        )

    def phone() -> str:
        return fake.phone_number()

    gens: dict[str, Callable[[], str]] = {
        "CREDIT_CARD": card,
        "EMAIL_ADDRESS": lambda: rng.choice([fake.email, fake.free_email, fake.company_email])(),
        "US_SSN": fake.ssn,
        "IBAN_CODE": iban,
        "IP_ADDRESS": ip,
        "PHONE_NUMBER": phone,
        "AWS_ACCESS_KEY": aws,
        "PRIVATE_KEY": pem,
        "JWT": jwt,
        "GITHUB_TOKEN": github,
        "SLACK_TOKEN": slack,
        "STRIPE_KEY": stripe,
    }
    return gens


def _password_pair(fake: Faker, rng: random.Random) -> tuple[str, int, int]:
    secret = fake.password(length=rng.randint(8, 20))
    key = rng.choice(["password", "pwd", "secret", "passwd", "PASSWORD", "db_password", "api_key"])
    form = rng.randrange(4)
    if form == 0:
        prefix = f"{key}="
    elif form == 1:
        prefix = f"{key}: "
    elif form == 2:
        prefix = f'{{"{key}": "'
    else:
        prefix = f"host=db.internal user=app {key}="
    text = prefix + secret + ('"}' if form == 2 else "")
    return text, len(prefix), len(prefix) + len(secret)


def _negatives(fake: Faker, rng: random.Random) -> list[tuple[str, Callable[[], str]]]:
    def luhn_failing_card() -> str:
        number = fake.credit_card_number(rng.choice(["visa16", "mastercard", "amex"]))
        last = int(number[-1])
        return number[:-1] + str((last + rng.randint(1, 9)) % 10)

    def invalid_ssn() -> str:
        area = rng.choice(["000", "666", str(rng.randint(900, 999))])
        return f"{area}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"

    return [
        ("order_number", lambda: f"ORD-{rng.randint(2015, 2026)}-{rng.randrange(10**6):06d}"),
        ("invoice", lambda: f"INV{rng.randrange(10**9, 10**10)}"),
        ("timestamp", lambda: fake.date_time().isoformat(sep=" ")),
        ("timestamp_tz", lambda: fake.iso8601() + "+00:00"),
        ("epoch_ms", lambda: str(rng.randrange(1_000_000_000_000, 1_800_000_000_000))),
        ("version", lambda: f"{rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 200)}"),
        (
            "version_tag",
            lambda: (
                f"v{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}-rc.{rng.randint(1, 9)}"
            ),
        ),
        ("uuid", fake.uuid4),
        ("isbn13", fake.isbn13),
        ("isbn10", fake.isbn10),
        ("ean13", fake.ean13),
        ("ean8", fake.ean8),
        ("luhn_failing_card", luhn_failing_card),
        ("invalid_ssn", invalid_ssn),
        ("zip4", lambda: f"{rng.randrange(10**5):05d}-{rng.randrange(10**4):04d}"),
        ("routing_number", fake.aba),
        ("sha1", fake.sha1),
        ("md5", fake.md5),
        ("price", lambda: f"${rng.randint(1, 99999):,}.{rng.randint(0, 99):02d}"),
        ("user_agent", fake.user_agent),
        ("date", lambda: fake.date()),
        ("tracking", lambda: "1Z" + _alnum(rng, 16, string.ascii_uppercase + string.digits)),
        ("sentence", fake.sentence),
        ("address", lambda: fake.address().replace("\n", ", ")),
        ("bban", fake.bban),
        ("license_plate", fake.license_plate),
        ("quantity_list", lambda: ", ".join(str(rng.randint(1, 5000)) for _ in range(5))),
    ]


def generate(per_type: int = 5000, seed: int = 4242) -> list[Sample]:
    """`per_type` positives per entity type and `per_type` look-alike negatives."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    gens = _generators(fake, rng)
    samples: list[Sample] = []
    for entity in ENTITY_TYPES:
        for i in range(per_type):
            if entity == "PASSWORD_PAIR":
                text, s, e = _password_pair(fake, rng)
                samples.append(Sample(text, (("PASSWORD_PAIR", s, e),), entity))
                continue
            value = gens[entity]()
            template = TEMPLATES[0] if i % 2 == 0 else rng.choice(TEMPLATES[1:])
            text = template.format(value)
            start = text.index(value)
            samples.append(Sample(text, ((entity, start, start + len(value)),), entity))
    negatives = _negatives(fake, rng)
    for i in range(per_type):
        what, gen = negatives[i % len(negatives)]
        samples.append(Sample(gen(), (), f"NEGATIVE:{what}"))
    return samples


MIXED_COLUMNS = (
    ("id", 23),
    ("name", 25),
    ("email", 1043),
    ("phone", 1043),
    ("card", 1043),
    ("ssn", 1043),
    ("created_at", 1184),
    ("amount", 1700),
    ("address", 25),
    ("notes", 25),
)


def mixed_rows(n: int = 1000, seed: int = 7) -> list[list[bytes | None]]:
    """Text-format values of a 10-column customer table with mixed PII."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    rows = []
    notes = [
        lambda: fake.sentence(),
        lambda: f"customer asked to use {fake.email()} instead",
        lambda: f"refund to card {fake.credit_card_number('visa16')} approved",
        lambda: f"order {rng.randrange(10**5)} shipped {fake.date()}",
        lambda: "",
    ]
    for i in range(n):
        row = [
            str(i + 1),
            fake.name(),
            fake.email(),
            fake.phone_number(),
            fake.credit_card_number(rng.choice(["visa16", "mastercard", "amex"])),
            fake.ssn(),
            fake.date_time().isoformat(sep=" ") + "+00",
            f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}",
            fake.address().replace("\n", ", "),
            rng.choice(notes)(),
        ]
        rows.append([None if v == "" else v.encode() for v in row])
    return rows
