"""Statements that update stored rows without being UPDATE:

- `INSERT ... ON CONFLICT (id) DO UPDATE SET c = ...` changes existing rows, but its
  facts said only `insert`: a rule on `kinds: [update]`, or on the column it sets,
  did not match it.
- `ALTER TABLE t ALTER COLUMN c TYPE ... USING <expr>` rewrites c in every row (an
  UPDATE without WHERE, which the baseline holds for review), and a rule on the column
  did not see the column at all.

Through a real gateway and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from wardgate.testing.pgcluster import PgCluster


@pytest.fixture
def gw(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[RunningGateway]:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "no-salary-writes",
                "verdict": "deny",
                "writes": True,
                "objects": {"columns": ["upay.salary"]},
            },
            {
                "name": "frozen",
                "verdict": "deny",
                "kinds": ["update"],
                "objects": {"tables": ["ufrozen"]},
            },
        ],
    }
    gateway = start_gateway(
        tmp_path,
        pg_cluster,
        extra={
            "policies": [policy],
            "approvals": {"default_ttl": "0.3s", "poll_interval": "0.1s"},
        },
        connection_extra={"policies": ["p"]},
    )
    pg_cluster.psql(
        "orders",
        "DROP TABLE IF EXISTS upay, ufrozen, uother; "
        "CREATE TABLE upay (id int PRIMARY KEY, salary numeric); "
        "INSERT INTO upay VALUES (1, 1000); "
        "CREATE TABLE ufrozen (id int PRIMARY KEY, v text); INSERT INTO ufrozen VALUES (1, 'a'); "
        "CREATE TABLE uother (id int PRIMARY KEY, v int); INSERT INTO uother VALUES (1, 7); "
        "ALTER TABLE upay OWNER TO app; ALTER TABLE ufrozen OWNER TO app; "
        "ALTER TABLE uother OWNER TO app",
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def _refused(conn: psycopg.Connection, sql: str, match: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=match):
        conn.execute(sql)


def test_an_upsert_is_an_update_of_the_columns_it_sets(gw: RunningGateway) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        _refused(
            conn,
            "INSERT INTO upay (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET salary = 0",
            "no-salary-writes",
        )
        _refused(
            conn,
            "INSERT INTO ufrozen VALUES (1, 'b') ON CONFLICT (id) DO UPDATE SET v = excluded.v",
            "frozen",
        )
        conn.execute("INSERT INTO ufrozen VALUES (1, 'b') ON CONFLICT (id) DO NOTHING")
        assert conn.execute("SELECT salary FROM upay").fetchone() == (1000,)
        assert conn.execute("SELECT v FROM ufrozen").fetchone() == ("a",)


def test_alter_column_type_using_is_an_update_of_every_row(gw: RunningGateway) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        _refused(conn, "ALTER TABLE upay ALTER COLUMN salary TYPE int USING 0", "no-salary-writes")
        # held by baseline/review-without-where; nobody approves within the TTL
        _refused(conn, "ALTER TABLE uother ALTER COLUMN v TYPE int USING 0", "timed out")
        assert conn.execute("SELECT v FROM uother").fetchone() == (7,)
        conn.execute("ALTER TABLE uother ALTER COLUMN v TYPE bigint USING v::bigint")
        assert conn.execute("SELECT v FROM uother").fetchone() == (7,)
        assert conn.execute("SELECT salary FROM upay").fetchone() == (1000,)


@pytest.fixture
def masked(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[RunningGateway]:
    policy = {
        "name": "m",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide",
                "verdict": "mask",
                "mask": {"columns": ["hpay.ssn"], "strategy": "redact"},
            }
        ],
    }
    gateway = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["m"]}
    )
    pg_cluster.psql(
        "orders",
        "DROP TABLE IF EXISTS hpay, hcopy; CREATE TABLE hpay (id int, ssn text); "
        "INSERT INTO hpay VALUES (1, 'okapi-zebra'); CREATE TABLE hcopy (id int, v text); "
        "INSERT INTO hcopy VALUES (1, 'x'); ALTER TABLE hpay OWNER TO app; "
        "ALTER TABLE hcopy OWNER TO app",
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE hcopy SET v = p.ssn FROM hpay AS p WHERE hcopy.id = p.id",
        "MERGE INTO hcopy USING hpay AS p ON hcopy.id = p.id WHEN MATCHED THEN UPDATE SET v = p.ssn",
        "MERGE INTO hcopy USING hpay ON false WHEN NOT MATCHED THEN INSERT (id, v) "
        "VALUES (2, hpay.ssn)",
    ],
)
def test_copies_of_a_covered_column_through_aliases_and_merge_are_refused(
    masked: RunningGateway, sql: str
) -> None:
    with psycopg.connect(masked.dsn(), autocommit=True) as conn:
        _refused(conn, sql, "masked-column-copy")
        assert "okapi" not in repr(conn.execute("SELECT v FROM hcopy").fetchall())
