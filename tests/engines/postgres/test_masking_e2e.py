"""Sensitive values never leave the gateway and never enter the record.

Known values are put on the target directly, then read through the gateway in every
path PostgreSQL has: simple and extended protocol, text and binary formats, COPY TO
STDOUT, an ErrorResponse that echoes a value, a NoticeResponse, a NotificationResponse,
and statement text and bound parameters. Every byte of the store is then searched:
zero raw values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway

SECRETS = {
    "email": "ann.lee@example.com",
    "card": "4111 1111 1111 1111",
    "card_plain": "5500000000000004",
    "ssn": "536-22-1234",
    "iban": "DE89370400440532013000",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


@pytest.fixture(scope="module")
def masked_gw(pg_cluster, tmp_path_factory: pytest.TempPathFactory):
    gw = start_gateway(tmp_path_factory.mktemp("mask"), pg_cluster)
    c = pg_cluster
    c.psql(
        "orders",
        """
        drop table if exists pii cascade;
        create table pii (id int primary key, email text unique, card varchar(40), card2 text,
                          ssn text, iban text, note text, js jsonb);
        grant all on pii to app;
    """,
    )
    s = SECRETS
    c.psql(
        "orders",
        f"""
        insert into pii values (1, '{s["email"]}', '{s["card"]}', '{s["card_plain"]}', '{s["ssn"]}',
          '{s["iban"]}', 'key {s["aws"]} token {s["jwt"]}', '{{"contact": "{s["email"]}"}}');
        create or replace function shout() returns void language plpgsql as
          $$ begin raise notice 'contact % card %', '{s["email"]}', '{s["card_plain"]}'; end $$;
        grant execute on function shout() to app;
    """,
    )
    try:
        yield gw
    finally:
        gw.proc.stop()


def _assert_clean(text: str, where: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"raw {name} in {where}: {text[:300]}"


def test_every_path_is_masked_and_the_store_holds_no_raw_value(masked_gw: RunningGateway) -> None:
    gw = masked_gw
    seen: list[str] = []
    # simple protocol, text format
    r = subprocess.run(
        ["psql", "-X", "-A", gw.dsn(), "-c", "select * from pii"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    seen.append(r.stdout)
    assert "[EMAIL]" in r.stdout and "1111" in r.stdout
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        # extended protocol, text format, with a bound parameter carrying a raw value
        rows = conn.execute(
            "select email, card, note, js::text from pii where email = %s or id = %s",
            (SECRETS["email"], 1),
        ).fetchall()
        seen.append(repr(rows))
        # binary format results
        with conn.cursor(binary=True) as cur:
            rows = cur.execute(
                "select email, card, card2, ssn, iban, note, js from pii where id = %s", (1,)
            ).fetchall()
            seen.append(repr(rows))
        # bytea (hex text and binary): the bytes are scanned
        assert conn.execute("select email::bytea from pii").fetchone() == (None,)
        with conn.cursor(binary=True) as cur:
            assert cur.execute("select note::bytea from pii where id = %s", (1,)).fetchone() == (
                None,
            )
        # COPY TO STDOUT
        with conn.cursor().copy("copy pii to stdout") as cp:
            seen.append(b"".join(bytes(b) for b in cp).decode())
        # an ErrorResponse echoing the value (unique violation)
        with pytest.raises(psycopg.errors.UniqueViolation) as info:
            conn.execute(f"insert into pii (id, email) values (2, '{SECRETS['email']}')")
        seen.append(str(info.value) + str(info.value.diag.message_detail))
        assert "[EMAIL]" in str(info.value.diag.message_detail)
        # a NoticeResponse
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("select shout()")
        assert notices
        seen.extend(notices)
        # a NotificationResponse
        with psycopg.connect(gw.dsn(), autocommit=True) as listener:
            listener.execute("listen pii_channel")
            conn.execute(
                "select pg_notify('pii_channel', %s)", (f"new customer {SECRETS['email']}",)
            )
            got = next(listener.notifies(timeout=10))
            seen.append(got.payload)
            assert "[EMAIL]" in got.payload
    for i, text in enumerate(seen):
        _assert_clean(text, f"client path {i}")
    gw.proc.stop()  # flush and checkpoint
    blobs = b"".join(f.read_bytes() for f in Path(gw.directory).glob("audit.db*"))
    assert blobs
    for name, value in SECRETS.items():
        assert value.encode() not in blobs, f"raw {name} found in the store"
    gw.proc.start()


def test_column_rule_on_numeric_column_sends_null(pg_cluster, tmp_path: Path) -> None:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide-salary",
                "verdict": "mask",
                "mask": {"columns": ["staff.salary", "staff.name"], "strategy": "redact"},
            }
        ],
    }
    gw = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["p"]}
    )
    pg_cluster.psql(
        "orders",
        "drop table if exists staff; create table staff (name text, salary numeric); "
        "insert into staff values ('Zed', 123456.78); grant all on staff to app",
    )
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            assert conn.execute("select name, salary from staff").fetchone() == ("[REDACTED]", None)
            with conn.cursor(binary=True) as cur:
                assert cur.execute(
                    "select name, salary from staff where salary > %s", (0,)
                ).fetchone() == ("[REDACTED]", None)
    finally:
        gw.proc.stop()
    blobs = b"".join(f.read_bytes() for f in tmp_path.glob("audit.db*"))
    assert b"123456.78" not in blobs and b"Zed" not in blobs.replace(
        b'Zed"', b""
    )  # not a row value


def test_copy_that_cannot_be_masked_is_refused(masked_gw: RunningGateway) -> None:
    with psycopg.connect(masked_gw.dsn(), autocommit=True) as conn:
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="binary COPY output cannot be masked"
        ):
            with conn.cursor().copy("copy pii to stdout with (format binary)") as cp:
                for _ in cp:
                    pass
        # csv is scanned by content like text
        with conn.cursor().copy(
            "copy (select email, card from pii) to stdout with (format csv)"
        ) as cp:
            data = b"".join(bytes(b) for b in cp).decode()
        assert "[EMAIL]" in data and SECRETS["email"] not in data
        assert conn.execute("select 1").fetchone() == (1,)


def test_expressions_over_a_masked_column_are_masked(pg_cluster, tmp_path: Path) -> None:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide-ssn",
                "verdict": "mask",
                "mask": {"columns": ["*.ssn"], "strategy": "redact"},
            }
        ],
    }
    gw = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["p"]}
    )
    pg_cluster.psql(
        "orders",
        "drop table if exists emp; create table emp (id int, ssn text, nick text); "
        "insert into emp values (1, '078-05-1120', 'zed'); grant all on emp to app",
    )
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            row = conn.execute(
                "select ssn, encode(ssn::bytea, 'hex'), upper(ssn), nick from emp"
            ).fetchone()
            assert row[0] == "[REDACTED]" and row[1] == "[REDACTED]" and row[2] == "[REDACTED]"
            assert row[3] == "zed"  # a plain column the rule does not cover is untouched
            e = conn.execute("select e.ssn || '' from emp e join (select 1) x on true").fetchone()[
                0
            ]
            assert e == "[REDACTED]"
    finally:
        gw.proc.stop()


def test_column_rules_follow_the_source_column_through_aliases(pg_cluster, tmp_path: Path) -> None:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide-ssn",
                "verdict": "mask",
                "mask": {"columns": ["emp2.ssn"], "strategy": "redact"},
            }
        ],
    }
    pg_cluster.psql(
        "orders",
        "drop table if exists emp2; create table emp2 (id int, ssn text, nick text); "
        "insert into emp2 values (1, 'secret-value-7', 'zed'); grant all on emp2 to app",
    )
    gw = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["p"]}
    )
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            # swapped aliases: the value under "nick" is the ssn
            row = conn.execute("select ssn as nick, nick as ssn from emp2").fetchone()
            assert row == ("[REDACTED]", "zed")
            row = conn.execute("select e.ssn as x from emp2 e").fetchone()
            assert row == ("[REDACTED]",)
    finally:
        gw.proc.stop()


def test_copying_a_ruled_column_elsewhere_is_refused(pg_cluster, tmp_path: Path) -> None:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide-ssn",
                "verdict": "mask",
                "mask": {"columns": ["emp3.ssn"], "strategy": "redact"},
            }
        ],
    }
    pg_cluster.psql(
        "orders",
        "drop table if exists emp3 cascade; drop table if exists sink3; "
        "create table emp3 (id int, ssn text); create table sink3 (v text); "
        "insert into emp3 values (1, 'secret-value-8'); grant all on emp3, sink3 to app; "
        "grant create on schema public to app",
    )
    gw = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["p"]}
    )
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            for sql in (
                "insert into sink3 select ssn from emp3",
                "create view v3 as select ssn as x from emp3",
                "create table t3 as select e.ssn from emp3 e join sink3 s on true",
            ):
                with pytest.raises(
                    psycopg.errors.InsufficientPrivilege, match="builtin/masked-column-copy"
                ):
                    conn.execute(sql)
            conn.execute(
                "insert into emp3 (id, ssn) values (2, 'new')"
            )  # writing the column is fine
    finally:
        gw.proc.stop()
    assert pg_cluster.psql("orders", "select count(*) from sink3") == "0"


def test_rows_past_the_record_budget_are_masked_in_runs(pg_cluster, tmp_path: Path) -> None:
    """Once a statement's record budget is spent the relay hands whole runs of DataRows
    to the masker (one C call per run): every row is still masked and counted."""
    gw = start_gateway(tmp_path, pg_cluster, connection_extra={"record_rows_budget": "4KB"})
    try:
        sql = (
            "select g, 'user' || g || '@example.com' as email, "
            "'4111 1111 1111 1111' as card, md5(g::text) as filler "
            "from generate_series(1, 20000) g"
        )
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            rows = conn.execute(sql).fetchall()
            rows_extended = conn.execute(sql + " where %s", (True,)).fetchall()
    finally:
        gw.proc.stop()
    for got in (rows, rows_extended):
        assert len(got) == 20000
        assert all("@example.com" not in r[1] for r in got), "an email went through unmasked"
        assert all(r[2] != "4111 1111 1111 1111" for r in got)
        assert [r[0] for r in got] == list(range(1, 20001))  # nothing lost or reordered
    out = subprocess.run(
        [sys.executable, "-m", "wardgate", "masking", "report", "--config", str(gw.config),
         "--json"],
        capture_output=True, text=True, env={**os.environ, **gw.env}, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    columns = json.loads(out.stdout)["connections"]["orders"]["columns"]
    assert columns["email"]["entities"] == {"EMAIL_ADDRESS": 40000}
    assert columns["card"]["entities"] == {"CREDIT_CARD": 40000}
    assert columns["email"]["rows_scanned"] == 40000
