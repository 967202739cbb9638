"""Bind values as text: the binary form of each common type, taken from a real
PostgreSQL, reads as the text PostgreSQL itself prints for it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardgate.testing.pgcluster import PgCluster
from wardgate.wire.pg.params import escape_bytes, parameter_text

EXPRESSIONS = [
    "true",
    "false",
    "(-32768)::int2",
    "2147483647::int4",
    "(-4111111111111111)::int8",
    "4111111111111111::int8",
    "4294967295::oid",
    "1.5::float8",
    "0.1::float8",
    "1e100::float8",
    "(-2.5e-30)::float8",
    "'Infinity'::float8",
    "'NaN'::float8",
    "0.1::float4",
    "3.14159::float4",
    "1e30::float4",
    "0::numeric",
    "1.50::numeric",
    "(-1234567.000089)::numeric",
    "4111111111111111::numeric",
    "0.0001::numeric",
    "123456789012345678901234567890.5::numeric",
    "'NaN'::numeric",
    "'jane.doe@example.com'::text",
    "'caf\u00e9 \u2603'::varchar",
    "'x'::bpchar",
    "'a3bb189e-8bf9-3888-9912-ace4e6543002'::uuid",
    """'{"email": "jane@example.com"}'::jsonb""",
    "'2026-11-26'::date",
    "'1999-12-31'::date",
    "'infinity'::date",
    "'13:14:15.5'::time",
    "'00:00:00'::time",
    "'2026-11-26 18:00:00.123'::timestamp",
    "'1970-01-01 00:00:00'::timestamp",
    "'2026-11-26 18:00:00.5+00'::timestamptz",
    "'-infinity'::timestamptz",
]


@pytest.fixture(scope="module")
def conn(pg_cluster: PgCluster) -> Iterator[psycopg.Connection]:
    c = pg_cluster
    with psycopg.connect(
        host="127.0.0.1",
        port=c.port,
        user=c.app_user,
        password=c.app_password,
        dbname=c.database,
        autocommit=True,
    ) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'")
        yield conn


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_binary_value_reads_as_postgresql_text(conn: psycopg.Connection, expr: str) -> None:
    binary = conn.cursor(binary=True)
    binary.execute(f"SELECT {expr}")
    assert binary.pgresult is not None
    raw, oid = binary.pgresult.get_value(0, 0), binary.pgresult.ftype(0)
    text = conn.cursor(binary=False)
    text.execute(f"SELECT {expr}")
    assert text.pgresult is not None
    expected = bytes(text.pgresult.get_value(0, 0)).decode()
    assert parameter_text(bytes(raw), 1, oid) == expected


def test_card_number_sent_as_int8_or_numeric_is_readable_text(conn: psycopg.Connection) -> None:
    # the point of all this: the record's masker must see the digits
    for expr in ("4111111111111111::int8", "4111111111111111::numeric"):
        cur = conn.cursor(binary=True)
        cur.execute(f"SELECT {expr}")
        assert cur.pgresult is not None
        raw, oid = bytes(cur.pgresult.get_value(0, 0)), cur.pgresult.ftype(0)
        assert parameter_text(raw, 1, oid) == "4111111111111111"


def test_unknown_or_undeclared_binary_keeps_ascii_visible() -> None:
    assert parameter_text(b"jane@example.com", 1, 0) == "jane@example.com"
    assert parameter_text(b"a\\b\x00\xff", 1, 17) == "a\\\\b\\000\\377"
    assert parameter_text(b"\x01\x02", 1, 424242) == "\\001\\002"


def test_text_format_and_malformed_binary() -> None:
    assert parameter_text("caf\u00e9".encode(), 0, 23) == "caf\u00e9"
    assert parameter_text(b"\x00\x01\x02", 1, 23) == "\\000\\001\\002"  # 3 bytes for int4
    assert parameter_text(b"\x02", 1, 16) == "\\002"  # not a bool
    assert parameter_text(b"\x00\x01\x00\x00\x00\x00\x00\x00\x27\x10", 1, 1700) == (
        "\\000\\001\\000\\000\\000\\000\\000\\000'\\020"
    )  # digit 10000 is out of range


@given(
    st.binary(max_size=64),
    st.sampled_from([0, 16, 17, 20, 21, 23, 700, 701, 1082, 1083, 1114, 1184, 1700, 2950, 3802]),
)
def test_any_bytes_give_text_not_an_exception(value: bytes, oid: int) -> None:
    assert isinstance(parameter_text(value, 1, oid), str)


@given(st.binary(max_size=64))
def test_escape_bytes_is_reversible(value: bytes) -> None:
    text = escape_bytes(value)
    out, i = bytearray(), 0
    while i < len(text):
        if text[i] == "\\":
            if text[i + 1] == "\\":
                out.append(0x5C)
                i += 2
            else:
                out.append(int(text[i + 1 : i + 4], 8))
                i += 4
        else:
            out.append(ord(text[i]))
            i += 1
    assert bytes(out) == value
