"""ResultMasker: column rules, types, binary formats, DataRow and COPY re-encoding."""

from __future__ import annotations

import struct

import pytest

from wardgate.masking import BASELINE_MASK, ColumnInfo, MaskingConfig, MaskingEngine, MaskingError
from wardgate.masking.masker import decode_data_row, encode_data_row
from wardgate.pipeline.command import MaskDirective

TEXT, VARCHAR, INT4, INT8, NUMERIC, JSON, JSONB, TEXT_ARRAY, TIMESTAMPTZ, INET = (
    25, 1043, 23, 20, 1700, 114, 3802, 1009, 1184, 869,
)  # fmt: skip

ENGINE = MaskingEngine(MaskingConfig(), token_key=b"test-key")


def col(name: str, oid: int = TEXT, fmt: int = 0, table: str | None = "customers") -> ColumnInfo:
    return ColumnInfo(name, table, oid, fmt)


def rule(*columns: str, strategy: str = "redact") -> MaskDirective:
    return MaskDirective("test/cols", columns=columns, strategy=strategy)


def test_nothing_to_do_gives_no_plan() -> None:
    assert ENGINE.plan([], [col("email")]) is None
    # only unscannable types and no column rule
    assert ENGINE.plan([BASELINE_MASK], [col("id", INT4), col("at", TIMESTAMPTZ)]) is None


def test_entity_scan_and_unchanged_rows_are_the_same_object() -> None:
    m = ENGINE.plan([BASELINE_MASK], [col("id", INT4), col("email"), col("notes")])
    clean = [b"1", b"nobody", None]
    assert m.mask_values(clean) is clean
    out = m.mask_values([b"2", b"x@y.com", b"card 4111 1111 1111 1111, ok"])
    assert out == [b"2", b"[EMAIL]", b"card **** **** **** 1111, ok"]
    s = m.summary()
    assert s["columns"] == {"email": {"EMAIL_ADDRESS": 1}, "notes": {"CREDIT_CARD": 1}}
    assert s["rows"] == 2 and s["rules"][0]["rule"] == "baseline/mask-pii"


@pytest.mark.parametrize(
    ("pattern", "column", "covered"),
    [
        ("customers.email", col("email"), True),
        ("customers.email", col("email", table="orders"), False),
        ("customers.email", col("email", table=None), True),  # unknown table: fail closed
        ("customers.email", col("EMAIL", table="public.customers"), True),
        ("*.ssn", col("ssn", table="anything"), True),
        ("email", col("email", table="orders"), True),
        ("email", col("email2"), False),
        ("cust*.e*", col("email"), True),
    ],
)
def test_column_rule_patterns(pattern: str, column: ColumnInfo, covered: bool) -> None:
    m = ENGINE.plan([rule(pattern)], [column])
    if not covered:
        assert m is None
        return
    assert m.mask_values([b"plain value"]) == [b"[REDACTED]"]


def test_column_rule_masks_whole_value_regardless_of_content() -> None:
    m = ENGINE.plan([rule("*.ssn", strategy="partial")], [col("ssn"), col("name")])
    assert m.mask_values([b"123456789", b"Bob"]) == [b"*****6789", b"Bob"]
    assert m.mask_values([None, b"Al"]) == [None, b"Al"]
    assert m.summary()["column_rules"]["ssn"] == {
        "rule": "test/cols",
        "strategy": "partial",
        "values": 1,
    }


def test_strongest_strategy_wins_and_baseline_cards_are_partial() -> None:
    m = ENGINE.plan(
        [rule("ssn", strategy="partial"), rule("ssn", strategy="token"), BASELINE_MASK],
        [col("ssn"), col("card")],
    )
    ssn, card = m.mask_values([b"123456789", b"4242424242424242"])
    assert ssn.startswith(b"tok_redacted_")
    assert card == b"************4242"
    m2 = ENGINE.plan(
        [BASELINE_MASK, MaskDirective("p/r", entities=("CREDIT_CARD",), strategy="redact")],
        [col("card")],
    )
    assert m2.mask_values([b"4242424242424242"]) == [b"[CREDIT_CARD]"]


def test_numeric_column_rule_gives_null_and_is_counted() -> None:
    m = ENGINE.plan([rule("ssn", "balance")], [col("ssn", INT4), col("balance", NUMERIC)])
    assert m.mask_values([b"123456789", b"10.5"]) == [None, None]
    assert m.summary()["nulled"] == {"ssn": 1, "balance": 1}


def test_entity_in_a_numeric_column_gives_null() -> None:
    m = ENGINE.plan([BASELINE_MASK], [col("cardno", NUMERIC), col("other", NUMERIC)])
    assert m.mask_values([b"4111111111111111", b"12.50"]) == [None, b"12.50"]
    assert m.summary()["nulled"] == {"cardno": 1}


def test_ip_in_inet_column_gives_null() -> None:
    m = ENGINE.plan([MaskDirective("p/ip", entities=("IP_ADDRESS",))], [col("addr", INET)])
    assert m.mask_values([b"10.1.2.3"]) == [None]


def test_json_columns_stay_valid_json() -> None:
    m = ENGINE.plan([rule("doc"), BASELINE_MASK], [col("doc", JSON), col("meta", JSONB)])
    out = m.mask_values([b'{"a": 1}', b'{"email": "a@b.io"}'])
    assert out == [b'"[REDACTED]"', b'{"email": "[EMAIL]"}']


def test_binary_formats() -> None:
    cols = [
        col("name", TEXT, 1),
        col("meta", JSONB, 1),
        col("n", INT8, 1),
        col("tags", TEXT_ARRAY, 1),
        col("secret_n", INT8, 1),
    ]
    m = ENGINE.plan([BASELINE_MASK, rule("secret_n")], cols)
    int8 = struct.pack("!q", 4111111111111111)
    text_array_with_email = b"\x00\x00\x00\x01" + b"\x00" * 8 + b"\x00\x00\x00\x07a@b.com"
    out = m.mask_values([b"x@y.com", b'\x01{"e": "q@w.io"}', int8, text_array_with_email, int8])
    # a binary int8 is scanned as its digits: a card number kept in a bigint is NULL
    assert out == [b"[EMAIL]", b'\x01{"e": "[EMAIL]"}', None, None, None]
    small = struct.pack("!q", 42)
    assert m.mask_values([b"x", b"\x01{}", small, b"", small])[2] == small
    with pytest.raises(MaskingError):
        m.mask_values([b"x", b"\x02{}", int8, b"", int8])  # unknown jsonb version


def test_data_row_reencoding_has_correct_lengths() -> None:
    m = ENGINE.plan(
        [BASELINE_MASK, rule("ssn")], [col("id", INT4), col("email"), col("ssn", INT4), col("n")]
    )
    body = encode_data_row([b"7", b"long.address@example.com", b"123456789", None])
    out = m.mask_data_row(body)
    assert decode_data_row(out) == [b"7", b"[EMAIL]", None, None]
    # lengths: Int16 count, then Int32 length + bytes
    assert struct.unpack_from("!h", out)[0] == 4
    assert out[2:6] == b"\x00\x00\x00\x01" and out[7:11] == b"\x00\x00\x00\x07"
    clean = encode_data_row([b"8", b"no email", b"", None])
    m2 = ENGINE.plan([BASELINE_MASK], [col("id", INT4), col("email"), col("ssn"), col("n")])
    assert m2.mask_data_row(clean) is clean


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00", b"\x00\x01", b"\x00\x01\x00\x00\x00\x05abc", b"\x00\x01\xff\xff\xff\xfe",
     b"\x00\x01\x00\x00\x00\x01ab", b"\xff\xff"],
)  # fmt: skip
def test_malformed_data_rows_raise_masking_error(body: bytes) -> None:
    m = ENGINE.plan([BASELINE_MASK], [col("email")])
    with pytest.raises(MaskingError):
        m.mask_data_row(body)


def test_value_count_mismatch_is_an_error() -> None:
    m = ENGINE.plan([BASELINE_MASK], [col("email"), col("x")])
    with pytest.raises(MaskingError):
        m.mask_values([b"a@b.com"])


def test_failing_replacer_raises_masking_error_without_the_value() -> None:
    m = ENGINE.plan([BASELINE_MASK], [col("email")])

    def boom(value: bytes) -> bytes:
        raise RuntimeError(value.decode())

    m._replacers["EMAIL_ADDRESS"] = boom
    with pytest.raises(MaskingError) as info:
        m.mask_values([b"secret.person@example.com"])
    assert "secret.person" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_copy_lines() -> None:
    cols = [col("id", INT4), col("email"), col("ssn"), col("notes")]
    m = ENGINE.plan([BASELINE_MASK, rule("ssn")], cols)
    assert m.mask_copy_line(b"1\ta@b.com\t123456789\t\\N\n") == b"1\t[EMAIL]\t[REDACTED]\t\\N\n"
    # escapes: a tab and a newline inside a value survive; untouched fields keep their bytes
    line = b"2\tx\\ty@z.org\t\\N\tline1\\nline2 \\\\ 4111-1111-1111-1111\n"
    assert m.mask_copy_line(line) == (
        b"2\tx\\t[EMAIL]\t\\N\tline1\\nline2 \\\\ ****-****-****-1111\n"
    )
    assert m.mask_copy_line(b"\\.\n") == b"\\.\n"
    clean = b"3\tnobody\t\\N\tplain\n"
    assert m.mask_copy_line(clean) is clean
    with pytest.raises(MaskingError):
        m.mask_copy_line(b"1\tonly two\n")


def test_copy_octal_and_hex_escapes() -> None:
    m = ENGINE.plan([BASELINE_MASK], [col("email")])
    # \100 is '@' in octal, \x40 in hex: the unescaped value is an email
    assert m.mask_copy_line(b"a\\100b.com\n") == b"[EMAIL]\n"
    assert m.mask_copy_line(b"a\\x40b.com\n") == b"[EMAIL]\n"


def test_custom_entity_scans_every_type() -> None:
    engine = MaskingEngine(
        MaskingConfig(custom=[{"name": "BIRTHDAY", "regex": r"19\d\d-\d\d-\d\d"}])
    )
    d = MaskDirective("p/bday", entities=("BIRTHDAY",))
    m = engine.plan([d], [col("dob", 1082), col("note")])
    assert m.mask_values([b"1980-02-03", b"born 1975-01-01"]) == [None, b"born [BIRTHDAY]"]


def test_custom_pattern_crossing_values_masks_both_sides() -> None:
    engine = MaskingEngine(MaskingConfig(custom=[{"name": "GREEDY", "regex": r"zz[^a]*"}]))
    m = engine.plan([MaskDirective("p/g", entities=("GREEDY",))], [col("a"), col("b")])
    assert m.mask_values([b"xx zz yy", b"qq a"]) == [b"xx [GREEDY]", b"[GREEDY]a"]


@pytest.mark.parametrize("with_c", [True, False])
def test_binary_int8_and_numeric_are_scanned_as_their_digits(monkeypatch, with_c: bool) -> None:
    """A card number kept in a bigint or numeric is NULL in binary results too; values
    below 10^12 pass untouched (and, with the C masker, without leaving it)."""
    from wardgate.masking import native

    if not with_c:
        monkeypatch.setattr(native, "AVAILABLE", False)
    cols = [col("id", INT8, 1), col("pan", 1700, 1), col("email", TEXT, 1)]
    m = ENGINE.plan([BASELINE_MASK], cols)

    def numeric(text: str) -> bytes:  # numeric_send of a non-negative integer
        groups = []
        digits = text
        while digits:
            groups.insert(0, int(digits[-4:]))
            digits = digits[:-4]
        return struct.pack("!hhHh", len(groups), len(groups) - 1, 0, 0) + b"".join(
            struct.pack("!h", g) for g in groups
        )

    card = struct.pack("!q", 4111111111111111)
    small = struct.pack("!q", 42)
    row = encode_data_row([card, numeric("4111111111111111"), b"a@b.io"])
    assert decode_data_row(m.mask_data_row(row)) == [None, None, b"[EMAIL]"]
    clean = encode_data_row([small, numeric("123456"), b"x"])
    assert m.mask_data_row(clean) == clean
    big_not_card = encode_data_row([struct.pack("!q", 10**15), numeric("1234567890123"), b"x"])
    assert m.mask_data_row(big_not_card) == big_not_card
    assert m.summary()["rows"] == 3 and m.summary()["nulled"] == {"id": 1, "pan": 1}
