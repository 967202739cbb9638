"""A column under a column mask rule cannot be moved out from under the rule by DDL:
renaming the column or its table would leave the rule naming nothing, and a trigger
function sees NEW/OLD rows of whichever table a trigger names. Both are refused
(`builtin/masked-column-rename`, `builtin/masked-column-copy`); before, `RENAME COLUMN
diagnosis TO dx` then `SELECT dx` read the value raw, and a trigger's `RAISE NOTICE`
of NEW.diagnosis showed it to the agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import start_gateway
from wardgate.testing.pgcluster import PgCluster

SECRET = "okapi zebra fever"


@pytest.fixture
def gw(pg_cluster: PgCluster, tmp_path: Path) -> Any:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide",
                "verdict": "mask",
                "mask": {"columns": ["esc.diagnosis"], "strategy": "redact"},
            }
        ],
    }
    gateway = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["p"]}
    )
    pg_cluster.psql(
        "orders",
        "drop table if exists esc, esc2, esc_parent, esc_parted; "
        "create table esc (id int, diagnosis text); "
        "create table esc_parent (id int, diagnosis text); alter table esc_parent owner to app; "
        "create table esc_parted (id int, diagnosis text) partition by range (id); "
        "alter table esc_parted owner to app; "
        f"insert into esc values (1, '{SECRET}'); grant all on esc to app; "
        "alter table esc owner to app",
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


@pytest.mark.parametrize(
    "ddl",
    [
        "ALTER TABLE esc RENAME COLUMN diagnosis TO dx",
        "ALTER TABLE esc RENAME TO esc2",
        # the rows read as the parent's: SELECT diagnosis FROM esc_parent
        "ALTER TABLE esc INHERIT esc_parent",
        "ALTER TABLE esc_parted ATTACH PARTITION esc FOR VALUES FROM (0) TO (10)",
    ],
)
def test_renaming_a_ruled_column_or_its_table_is_refused(gw: Any, ddl: str) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masked-column-rename"):
            conn.execute(ddl)
        assert conn.execute("SELECT diagnosis FROM esc").fetchone() == ("[REDACTED]",)
        for parent in ("esc_parent", "esc_parted"):
            rows = conn.execute(f"SELECT diagnosis FROM {parent}").fetchall()
            assert SECRET not in repr(rows)
        conn.execute("ALTER TABLE esc RENAME COLUMN id TO ident")  # other columns: fine
        conn.execute("ALTER TABLE esc RENAME COLUMN ident TO id")


@pytest.mark.parametrize("row", ["NEW.diagnosis", "NEW", "to_jsonb(NEW)"])
def test_a_trigger_function_over_a_ruled_column_is_refused(gw: Any, row: str) -> None:
    notices: list[str] = []
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masked-column-copy"):
            conn.execute(
                "CREATE FUNCTION esc_leak() RETURNS trigger AS $$ BEGIN "
                f"RAISE NOTICE '%', {row}; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        conn.execute("UPDATE esc SET id = 2 WHERE id = 1")
    assert not any("zebra" in n for n in notices)
