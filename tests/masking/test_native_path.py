"""The C row masker (`_rowmask`) masks exactly what the Python paths mask.

Each test masks the same DataRow bodies twice: with the masker as the engine
builds it (the C row masker first, the Python path for rows a gate sends back)
and with a reference whose C masker is removed and whose scanner is pure
Python (the value path). Bodies, errors and summaries must be equal. Token
replacers make every span visible in the output (a span one byte off gives a
different token); the labelled Faker set and generated text cover the corners
of the patterns (separators, look-behinds, greedy repeats given back, rejected
candidates followed by another recognizer, email domains that backtrack).
"""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.masking import (
    BASELINE_MASK,
    ColumnInfo,
    MaskingConfig,
    MaskingEngine,
    MaskingError,
    native,
)
from wardgate.masking.masker import ResultMasker, encode_data_row
from wardgate.masking.scanner import Scanner
from wardgate.pipeline.command import MaskDirective

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from pii_dataset import MIXED_COLUMNS, generate, mixed_rows  # noqa: E402

PACKAGE = Path(native.__file__).parent
BUILT_HERE = any(PACKAGE.glob("_rowmask*.so")) or any(PACKAGE.glob("_rowmask*.pyd"))
DISABLED = (
    os.environ.get("WARDGATE_MASKING_NATIVE") == "0"
    or os.environ.get("WARDGATE_MASKING_COMPILED") == "0"
)
needs_native = pytest.mark.skipif(not native.AVAILABLE, reason="the C row masker is not built")

ALL = MaskDirective("test/all", entities=("*",), strategy="default")
TOKENS = MaskDirective("test/tokens", entities=("*",), strategy="token")
HASHES = MaskDirective("test/hash", entities=("*",), strategy="hash")
PARTIAL = MaskDirective("test/partial", entities=("*",), strategy="partial")
ENGINES = {
    "default": MaskingEngine(MaskingConfig(), token_key=b"k"),
    "phone": MaskingEngine(MaskingConfig(phone=True), token_key=b"k"),
    "no-ip": MaskingEngine(MaskingConfig(ip=False), token_key=b"k"),
}


def test_extension_loads_where_it_was_built() -> None:
    """Built in this checkout (pip install -e . with a C compiler): it must load."""
    assert native.BUILT == BUILT_HERE
    if BUILT_HERE and not DISABLED:
        assert native.AVAILABLE
        masker = ENGINES["default"].plan([BASELINE_MASK], [ColumnInfo("a", None, 25)])
        assert masker is not None and masker._native is not None


def _pair(engine: MaskingEngine, directives, columns) -> tuple[ResultMasker, ResultMasker]:
    fast = engine.plan(directives, columns)
    slow = engine.plan(directives, columns)
    assert fast is not None and slow is not None
    assert fast._native is not None
    slow._native = None
    slow._native_masker = None
    if slow._scanner is not None:  # the reference: pure Python scanner, value path
        pure = Scanner(slow._scanner.recognizers, compiled=False)
        slow._scanner = pure
        slow._find = pure.spans
        slow._body_path = False
    slow._cache = None
    return fast, slow


def _compare(fast: ResultMasker, slow: ResultMasker, rows) -> int:
    """Rows masked alike; returns how many rows C masked itself."""
    before = fast._native_masker.stats()[0]  # type: ignore[union-attr]
    for values in rows:
        body = encode_data_row(values)
        a = fast.mask_data_row(body)
        assert a == slow.mask_data_row(body), values
        if a == body:
            assert a is body  # nothing to mask: the very message is forwarded
    assert fast.summary() == slow.summary()
    return fast._native_masker.stats()[0] - before  # type: ignore[union-attr]


@needs_native
@pytest.mark.parametrize("directive", [BASELINE_MASK, ALL, TOKENS, HASHES, PARTIAL])
def test_mixed_rows_equal(directive) -> None:
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    fast, slow = _pair(ENGINES["default"], [directive], columns)
    rows = mixed_rows(600, seed=31)
    in_c = _compare(fast, slow, rows)
    assert in_c > 500  # the bench's rows are masked in C, not sent back
    assert fast.summary()["columns"]["card"]["CREDIT_CARD"] == 600


@needs_native
@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("directive", [ALL, TOKENS, PARTIAL])
def test_labelled_set_equal(engine, directive) -> None:
    """Every entity and look-alike of the accuracy set, one value per row."""
    fast, slow = _pair(ENGINES[engine], [directive], [ColumnInfo("v", None, 25)])
    samples = generate(per_type=120, seed=5)
    _compare(fast, slow, [[s.text.encode()] for s in samples])


PIECES = [
    # cards: brands, separators, Luhn failures, runs longer than a card, prefixes
    "4111 1111 1111 1111", "4111111111111111", "4111-1111-1111-1112", "378282246310005",
    "6011-0009-9013-9424", "5555 5555 5555 4444 1234", "1234 4111 1111 1111 1111",
    "4111 1111 1111 1111 1111 1111", "3530111333300000", "6200000000000005", "180000000000002",
    "2131000000000008", "8100000000000008", "22000000000000004", "4222222222222",
    # SSNs and look-alikes
    "219-09-9999", "219 09 9999", "219.09.9999", "219-09 9999", "078-05-1120", "123-45-6789",
    "000-12-3456", "666-12-3456", "912-12-3456", "219-00-9999", "219-09-0000", "111-11-1111",
    "-219-09-9999", "219-09-9999-", "219-09-9999.5", "219-09-9999.",
    # IBANs: valid, bad check digits, trailing text, lower case after, unknown countries
    "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82WEST12345698765432",
    "GB82 WEST 1234 5698 7654 32", "NO9386011117947", "DE89 3704 0044 0532 0130 00 12",
    "DE89370400440532013001", "XX12345678901234567", "DE893704004405320130001",
    "DE89 3704 0044 0532 0130 00x", "FR1420041010050500013M02606",
    # IPv4 and look-alikes
    "10.0.0.1", "192.168.001.1", "256.1.1.1", "1.2.3.4.5", "1.2.3.4a", "a1.2.3.4",
    ".1.2.3.4", "1.2.3.4.", "1.2.3.4567", "127.0.0.1:5432", "v1.2.3.4",
    # emails: dots, hyphens, digits in the last label, long labels, several "@"
    "jane@example.com", "j.doe+tag@mail.example.org", "a@b.co", "a@b.c0m", "a@b.co.c0m",
    "x@-a.com", "x@a-.com", "x@a-b.c-d.com", "x@a..com", "x@a.com.", "x@a.com-",
    "x@a.com_", "x@" + "a" * 70 + ".com", "x@a." + "b" * 70, "a@b@c.com", "@x.com",
    "y@" + "a-" * 40 + "a.com", "first.last@sub.domain.example", "%+-@ex.am.ple",
    # gates: secrets, key=value pairs, IPv6, phones (the row goes to Python)
    "password=hunter2", "PWD: x", "'secret': 'abc'", "postgres://u:pw@h/db", "Api_Key=z",
    "AKIAIOSFODNN7EXAMPLE", "::1", "fe80::1%eth0", "(555) 123-4567", "+44 20 7946 0958",
    "-----BEGIN PRIVATE KEY-----\nabc", "ghp_" + "a" * 36, "xoxb-1234567890-abc",
    "sk_live_" + "b" * 24, "eyJhbGciOi.eyJzdWIiOi.sig", "TOKEN", "passport", "Smith Pass",
    "my_pass: x", "compass: x", "Password = 'x'", "ALTER ROLE a PASSWORD 'b'", "api_key\t=z",
    "xpassword 'a'", "secret\"  : v", "http://h/p",
    # separators and noise
    " ", "-", ".", "@", ":", "=", "'", '"', "0", "1", "12", "123", "1234", "DE", "AB12", "x",
    "é", "\t", "\n", "_", "%", "+",
]  # fmt: skip

text_st = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.text(alphabet="0123456789 -.:@ABDEGNOZxa_%+", max_size=30),
    ),
    max_size=10,
).map(lambda p: "".join(p).encode())

row_st = st.lists(
    st.one_of(st.none(), text_st, st.binary(max_size=24)),
    min_size=5,
    max_size=5,
)


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.lists(row_st, min_size=1, max_size=6), st.sampled_from(sorted(ENGINES)))
def test_property_rows_equal(rows, engine) -> None:
    columns = [
        ColumnInfo("a", "t", 25),
        ColumnInfo("b", "t", 1043),
        ColumnInfo("c", "t", 23),  # int4: skipped
        ColumnInfo("d", "t", 1700),  # numeric: NULL on a finding
        ColumnInfo("secret", "t", 25),
    ]
    rule = MaskDirective("test/col", columns=("t.secret",), strategy="redact")
    for directives in ([TOKENS, rule], [ALL], [BASELINE_MASK], [PARTIAL]):
        fast, slow = _pair(ENGINES[engine], directives, columns)
        _compare(fast, slow, rows)


password_st = st.lists(
    st.sampled_from(
        [
            "pass", "PWD", "Secret", "token", "api_key", "ApiKey", "Auth_Token", "password",
            "passwd", "aws_secret_access_key", "com", "my", "x", "_", "1", " ", "  ", "\t",
            "'", '"', ":", "=", "/", "://", "@", "&", ";", ",", "u:p@h", "PASSWORD '", "''",
        ]
    ),
    max_size=12,
).map(lambda p: "".join(p).encode())  # fmt: skip


@needs_native
@settings(max_examples=400, deadline=None)
@given(st.lists(password_st, min_size=1, max_size=6))
def test_property_password_gate_covers_every_pair(values) -> None:
    """A value where Python finds a `key=value` pair never stays in C (it would miss it)."""
    fast, slow = _pair(ENGINES["default"], [TOKENS], [ColumnInfo("v", None, 25)])
    _compare(fast, slow, [[v] for v in values])


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.lists(text_st, min_size=1, max_size=20))
def test_property_values_equal_with_tokens(values) -> None:
    """One text column, every entity tokenised: any span C finds differently shows."""
    fast, slow = _pair(ENGINES["default"], [TOKENS], [ColumnInfo("v", None, 25)])
    _compare(fast, slow, [[v] for v in values])


def _boundaries() -> list[bytes]:
    """Values at the length limits of the patterns, just inside and just outside."""
    out = []
    for n in (62, 63, 64, 65):
        out += [
            b"x@" + b"a" * n + b".com",  # a domain label: at most 63
            b"x@a." + b"b" * n,  # the last label: at most 63 letters
            b"a" * n + b"@x.com",  # the local part: at most 64
            b"q@" + b"a-" * (n // 2) + b"a.com",
        ]
    for digits in range(12, 22):  # card runs: 13 to 19 digits, 12 to 18 after the first
        run = "4" + "1" * (digits - 1)
        out += [run.encode(), " ".join(run[i : i + 4] for i in range(0, digits, 4)).encode()]
        out.append((run + " " + run[:4]).encode())
    for groups in range(10, 33):  # IBAN: 11 to 30 groups after the check digits
        body = "".join("ABCDEFGHJK0123456789"[i % 20] for i in range(groups))
        out += [f"DE89{body}".encode(), f"GB82 {body}".encode(), f"DE89{body}x".encode()]
    for ssn in ("219-09-99999", "219-09-9999-1", "219-09-9999.1", "219-09-9999.x", "1219-09-9999"):
        out.append(ssn.encode())
    for blanks in (7, 8, 9):  # up to 8 blanks between a key and its separator
        out += [b"password" + b" " * blanks + b"=x", b"pwd'" + b"\t" * blanks + b": y"]
        out.append(b"PASSWORD" + b" " * blanks + b"'z'")
    for ip in ("1.2.3.4", "1.2.3.45", "1.2.3.456", "1.2.3.4567", "1234.1.1.1", "1.1234.1.1"):
        out += [ip.encode(), ip.encode() + b".", ip.encode() + b"._", b"_" + ip.encode()]
    return out


@needs_native
def test_pattern_limits_equal() -> None:
    values = _boundaries()
    for directive in (TOKENS, PARTIAL):
        fast, slow = _pair(ENGINES["default"], [directive], [ColumnInfo("v", None, 25)])
        rows = [[v] for v in values] + [[b"see " + v + b" and " + v] for v in values]
        assert _compare(fast, slow, rows) > len(rows) * 0.8  # key=value pairs: Python


def _random_value(rng: random.Random) -> bytes:
    alphabet = "0123456789      ----....@@AZDEGBxyz_%+"
    parts = []
    for _ in range(rng.randrange(1, 6)):
        if rng.random() < 0.5:
            parts.append(rng.choice(PIECES))
        else:
            parts.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 25))))
    return "".join(parts).encode()


@needs_native
def test_random_values_equal() -> None:
    """A larger seeded sweep than the property tests run."""
    rng = random.Random(2024)
    columns = [ColumnInfo("a", None, 25), ColumnInfo("b", None, 1700), ColumnInfo("c", None, 25)]
    for directives in ([TOKENS], [PARTIAL], [BASELINE_MASK]):
        fast, slow = _pair(ENGINES["default"], directives, columns)
        rows = [[_random_value(rng) for _ in range(3)] for _ in range(1500)]
        assert _compare(fast, slow, rows) > 0


@needs_native
def test_column_rules_of_every_mode() -> None:
    engine = ENGINES["default"]  # (with phone numbers on, "111 1111" sends a row to Python)
    columns = [
        ColumnInfo("id", "t", 23),
        ColumnInfo("note", "t", 25),
        ColumnInfo("ssn", "t", 1043),
        ColumnInfo("amount", "t", 1700),  # rule on a numeric: NULL
        ColumnInfo("doc", "t", 114),  # rule on json: a JSON string
        ColumnInfo("bin", "t", 3802, 1),  # rule on binary jsonb
        ColumnInfo("num", "t", 1700),  # a finding in a numeric: NULL
    ]
    rows = [
        [b"1", b"mail jane@example.com", b"219-09-9999", b"12.50", b'{"a": 1}', b'\x01"x"', b"5"],
        [None, None, None, None, None, None, None],
        [b"2", b"", b"x", b"0", b"{}", b"", b"4111111111111111"],
        [b"3", b"card 4111 1111 1111 1111 and 378282246310005", None, b"1", None, b"\x01", b"7"],
    ]
    for strategy in ("partial", "token", "hash", "redact"):
        rule = MaskDirective(
            "test/cols", columns=("*.ssn", "t.amount", "t.doc", "t.bin"), strategy=strategy
        )
        fast, slow = _pair(engine, [ALL, rule], columns)
        assert _compare(fast, slow, rows) == 4
        summary = fast.summary()
        assert summary["nulled"] == {"amount": 3, "num": 1}
        assert summary["column_rules"]["doc"]["values"] == 2


@needs_native
def test_rules_only_without_entities() -> None:
    rule = MaskDirective("test/cols", columns=("email",), strategy="redact")
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    fast, slow = _pair(ENGINES["default"], [rule], columns)
    assert fast._scanner is None
    assert _compare(fast, slow, mixed_rows(50, seed=2)) == 50


@needs_native
def test_gates_send_rows_to_python() -> None:
    """A row where any gate fires is masked by the Python path, and the secret found."""
    for text in (
        b"password=hunter2",
        b"see postgres://u:pw@h/db",
        b"AKIAIOSFODNN7EXAMPLE",
        b"call (555) 123-4567",
        b"host fe80::1",
        b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig",
    ):
        fast, slow = _pair(ENGINES["phone"], [ALL], [ColumnInfo("v", None, 25)])
        assert fast._native_masker.mask(encode_data_row([text])) is None  # type: ignore[union-attr]
        assert _compare(fast, slow, [[text]]) == 0
        assert fast.summary()["columns"]["v"], text  # found by the Python path


@needs_native
def test_deep_email_domain_goes_to_python() -> None:
    """More backtracking than C's budget: the row is sent back, not guessed."""
    fast, slow = _pair(ENGINES["default"], [ALL], [ColumnInfo("v", None, 25)])
    deep = b"x@" + b"a." * 3000 + b"c0m"
    assert fast._native_masker.mask(encode_data_row([deep])) is None  # type: ignore[union-attr]
    _compare(fast, slow, [[deep], [b"x@" + b"a." * 300 + b"com"]])


@needs_native
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00",
        b"\xff\xff",
        b"\x00\x02\x00\x00\x00\x01a",
        b"\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x05ab",
        b"\x00\x02\x00\x00\x00\x01a\xff\xff\xff\xfe",
        b"\x00\x02\x00\x00\x00\x01a\xff\xff\xff\xffX",
        b"\x00\x03\x00\x00\x00\x01a\xff\xff\xff\xff\xff\xff\xff\xff",
    ],
)
def test_malformed_rows_raise_the_same_error(body: bytes) -> None:
    fast, slow = _pair(ENGINES["default"], [BASELINE_MASK], [ColumnInfo("a", None, 25)] * 2)
    assert fast._native_masker.mask(body) is None  # type: ignore[union-attr]
    with pytest.raises(MaskingError) as a:
        fast.mask_data_row(body)
    with pytest.raises(MaskingError) as b:
        slow.mask_data_row(body)
    assert str(a.value) == str(b.value)


@needs_native
def test_a_failing_replacer_refuses_the_row_without_the_value() -> None:
    fast, _slow = _pair(ENGINES["default"], [TOKENS], [ColumnInfo("a", None, 25)])

    def broken(value: bytes) -> bytes:
        raise ValueError(value.decode())

    native_masker = native.row_masker(
        fast._scanner.recognizers,  # type: ignore[union-attr]
        [1],
        {**fast._replacers, "EMAIL_ADDRESS": broken},
        (),
    )
    assert native_masker is not None
    fast._native = native_masker.mask  # type: ignore[attr-defined]
    with pytest.raises(MaskingError) as err:
        fast.mask_data_row(encode_data_row([b"jane@example.com"]))
    assert "jane" not in str(err.value)


@needs_native
def test_custom_entities_and_bytea_stay_in_python() -> None:
    engine = MaskingEngine(
        MaskingConfig(custom=[{"name": "EMPLOYEE_ID", "regex": r"EMP-\d{6}"}])  # type: ignore[list-item]
    )
    masker = engine.plan([ALL], [ColumnInfo("v", None, 25)])
    assert masker is not None and masker._native is None
    masker = ENGINES["default"].plan([ALL], [ColumnInfo("v", None, 17)])  # bytea
    assert masker is not None and masker._native is None
    assert masker.mask_data_row(encode_data_row([b"jane@example.com"])) == encode_data_row([None])


def test_without_the_extension_the_output_is_the_same() -> None:
    """A process where the extension cannot be imported masks to the same bytes."""
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    bodies = [encode_data_row(r) for r in mixed_rows(150, seed=9)]
    bodies += [encode_data_row([None] * 9 + [v.encode()]) for v in PIECES]
    script = (
        "import pickle, sys\n"
        "sys.modules['wardgate.masking._rowmask'] = None  # the import fails\n"
        "from wardgate.masking import BASELINE_MASK, MaskingConfig, MaskingEngine, native\n"
        "from wardgate.pipeline.command import MaskDirective\n"
        "assert not native.BUILT and not native.AVAILABLE\n"
        "columns, bodies = pickle.load(sys.stdin.buffer)\n"
        "e = MaskingEngine(MaskingConfig(phone=True), token_key=b'k')\n"
        "out = []\n"
        "for d in (BASELINE_MASK, MaskDirective('test/tokens', entities=('*',), strategy='token')):\n"
        "    m = e.plan([d], columns)\n"
        "    assert m._native is None\n"
        "    out += [m.mask_data_row(b) for b in bodies] + [repr(m.summary()).encode()]\n"
        "sys.stdout.buffer.write(pickle.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps((columns, bodies)),
        capture_output=True,
        check=True,
        timeout=120,
    )
    engine = MaskingEngine(MaskingConfig(phone=True), token_key=b"k")
    expected = []
    for d in (BASELINE_MASK, TOKENS):
        masker = engine.plan([d], columns)
        assert masker is not None
        assert (masker._native is not None) == native.AVAILABLE
        expected += [masker.mask_data_row(b) for b in bodies] + [repr(masker.summary()).encode()]
    assert pickle.loads(done.stdout) == expected


# -- runs of DataRow messages ----------------------------------------------------------


def _message(body: bytes) -> bytes:
    return b"D" + (len(body) + 4).to_bytes(4, "big") + body


def _one_by_one(masker: ResultMasker, run_bodies: list[bytes]) -> bytes:
    return b"".join(_message(masker.mask_data_row(b)) for b in run_bodies)


@pytest.mark.parametrize("in_c", [True, False])
def test_runs_equal_rows_one_by_one(in_c: bool) -> None:
    """`mask_data_rows` over a run gives the messages `mask_data_row` gives one by one,
    rows sent to Python by a gate included, with the C masker and without it."""
    if in_c and not native.AVAILABLE:
        pytest.skip("the C row masker is not built")  # the in_c=False case still runs
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    engine = ENGINES["phone"]
    batch = engine.plan([ALL], columns)
    single = engine.plan([ALL], columns)
    assert batch is not None and single is not None
    if not in_c:
        batch._native = batch._native_run = single._native = single._native_run = None
    bodies = [encode_data_row(r) for r in mixed_rows(300, seed=17)]
    bodies += [encode_data_row([None] * 9 + [p.encode()]) for p in PIECES]
    random.Random(4).shuffle(bodies)
    for lo, hi in ((0, 1), (1, 5), (5, 80), (80, len(bodies))):
        run = b"".join(_message(b) for b in bodies[lo:hi])
        assert batch.mask_data_rows(run) == _one_by_one(single, bodies[lo:hi])
    assert batch.summary() == single.summary()


def test_runs_with_nothing_to_mask_return_the_same_object() -> None:
    masker = ENGINES["default"].plan([BASELINE_MASK], [ColumnInfo("a", None, 25)])
    assert masker is not None
    run = b"".join(_message(encode_data_row([v])) for v in (b"x", None, b"", b"12"))
    assert masker.mask_data_rows(run) is run
    assert masker.mask_data_rows(b"") == b""
    masker._native = masker._native_run = None
    assert masker.mask_data_rows(run) is run


@pytest.mark.parametrize(
    "run",
    [
        b"D",
        b"D\x00\x00\x00",
        b"D\x00\x00\x00\x03",
        b"D\x00\x00\x00\x0a\x00\x01\x00\x00",
        b"T\x00\x00\x00\x06\x00\x00",
        _message(encode_data_row([b"jane@example.com"])) + b"C\x00\x00\x00\x04",
    ],
)
def test_malformed_runs_raise(run: bytes) -> None:
    for in_c in (True, False):
        masker = ENGINES["default"].plan([BASELINE_MASK], [ColumnInfo("a", None, 25)])
        assert masker is not None
        if not in_c:
            masker._native = masker._native_run = None
        with pytest.raises(MaskingError):
            masker.mask_data_rows(run)


def test_a_row_that_cannot_be_masked_refuses_the_run() -> None:
    masker = ENGINES["default"].plan([BASELINE_MASK], [ColumnInfo("a", None, 25)] * 2)
    assert masker is not None
    good = _message(encode_data_row([b"jane@example.com", b"x"]))
    bad = _message(b"\x00\x02\x00\x00\x00\x01a\xff\xff\xff\xfe")  # a length below -1
    with pytest.raises(MaskingError):
        masker.mask_data_rows(good + bad + good)
