"""Statements that reach a table a rule names without naming it where the policy looked.

- `table_to_xml('hr.pay', ...)`, `schema_to_xml('hr', ...)`, `database_to_xml(...)` and
  `cursor_to_xml('c', ...)` read rows of what a value names: a deny rule on `hr.pay` did
  not match them, and a column rule did not mask their output.
- `ALTER SCHEMA hr RENAME TO hx` took `hr.pay` out from under a rule on `hr.pay`.
- An unqualified name was read as `public.<name>` even when the target's search_path
  said otherwise: one sent in the startup packet (asyncpg `server_settings`), or one an
  earlier session stored with `ALTER ROLE ... SET search_path`.

Each against a real gateway and PostgreSQL; the cluster is this module's own, since the
role's stored settings change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from wardgate.testing.gateway_process import AGENT_TOKENS
from wardgate.testing.pgcluster import PgCluster, find_pg_bin

pytestmark = pytest.mark.skipif(
    find_pg_bin() is None, reason="PostgreSQL server binaries not found: apt-get install postgresql"
)

SECRET = "okapi zebra fever"
SALARY = "987654.32"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    c = PgCluster.create()
    c.psql(
        "orders",
        "CREATE SCHEMA hr AUTHORIZATION app; "
        f"CREATE TABLE hr.pay (id int, salary numeric); INSERT INTO hr.pay VALUES (1, {SALARY}); "
        "ALTER TABLE hr.pay OWNER TO app; "
        f"CREATE TABLE public.esc (id int, diagnosis text); "
        f"INSERT INTO public.esc VALUES (1, '{SECRET}'); ALTER TABLE public.esc OWNER TO app; "
        "CREATE FUNCTION public.leak_fn() RETURNS int LANGUAGE sql AS 'SELECT 42'; "
        "ALTER FUNCTION public.leak_fn() OWNER TO app; CREATE SCHEMA vault AUTHORIZATION app; "
        "CREATE FUNCTION vault.open() RETURNS int LANGUAGE sql AS 'SELECT 7'; "
        "ALTER FUNCTION vault.open() OWNER TO app",
    )
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def gw(cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {"name": "no-pay", "verdict": "deny", "objects": {"tables": ["hr.pay"]}},
            {"name": "no-leak-fn", "verdict": "deny", "objects": {"functions": ["leak_fn"]}},
            {"name": "no-vault", "verdict": "deny", "objects": {"schemas": ["vault"]}},
            {
                "name": "hide",
                "verdict": "mask",
                "mask": {"columns": ["esc.diagnosis"], "strategy": "redact"},
            },
        ],
    }
    gateway = start_gateway(
        tmp_path_factory.mktemp("indirect"),
        cluster,
        extra={"policies": [policy]},
        connection_extra={"policies": ["p"]},
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def _refused(conn: psycopg.Connection, sql: str, rule: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=rule):
        conn.execute(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT table_to_xml('hr.pay', true, false, '')",
        "SELECT table_to_xml('HR.\"pay\"'::regclass, true, false, '')",
        "SELECT table_to_xml_and_xmlschema(tbl => 'hr.pay', nulls => true, "
        "tableforest => false, targetns => '')",
        "SELECT schema_to_xml('hr', true, false, '')",
        "SELECT database_to_xml(true, false, '')",
    ],
)
def test_xml_reads_of_a_denied_table_are_refused(gw: RunningGateway, sql: str) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        _refused(conn, sql, "no-pay")
        assert conn.execute("SELECT table_to_xml('esc', true, false, '')::text").fetchone()


def test_xml_reads_of_a_ruled_column_are_masked(gw: RunningGateway) -> None:
    with psycopg.connect(gw.dsn()) as conn:
        (xml,) = conn.execute("SELECT table_to_xml('public.esc', true, false, '')::text").fetchone()
        assert SECRET not in xml
        conn.execute("DECLARE c CURSOR FOR SELECT id, diagnosis FROM esc")
        (xml,) = conn.execute("SELECT cursor_to_xml('c', 10, false, false, '')::text").fetchone()
        assert SECRET not in xml
        conn.rollback()


def test_renaming_the_schema_of_a_denied_table_is_refused(gw: RunningGateway) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        _refused(conn, "ALTER SCHEMA hr RENAME TO hx", "no-pay")
        _refused(conn, "SELECT salary FROM hr.pay", "no-pay")


def _asyncpg_fetch(gw: RunningGateway, sql: str, **settings: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=gw.port,
            user="ci-bot",
            password=AGENT_TOKENS["ci-bot"],
            database="orders",
            server_settings=settings,
        )
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_a_search_path_from_the_startup_packet_is_not_read_as_public(gw: RunningGateway) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no-pay"):
        _asyncpg_fetch(gw, "SELECT salary FROM pay", search_path="hr")
    assert _asyncpg_fetch(gw, "SELECT 1 AS one")[0]["one"] == 1


def test_a_search_path_stored_by_an_earlier_session_is_not_read_as_public(
    gw: RunningGateway, cluster: PgCluster
) -> None:
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            conn.execute("ALTER ROLE app SET search_path = hr, public")
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            _refused(conn, "SELECT salary FROM pay", "no-pay")
            assert conn.execute("SELECT count(*) FROM public.esc").fetchone() == (1,)
    finally:
        cluster.psql("postgres", "ALTER ROLE app RESET search_path")


def test_sessions_under_the_default_search_path_read_unqualified_names_as_public(
    gw: RunningGateway, tmp_path: Path
) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM esc").fetchone() == (1,)


def test_tablefunc_queries_and_table_names_are_read_as_sql(gw: RunningGateway) -> None:
    """tablefunc is a trusted extension: the agent's role can create it, and crosstab()
    runs the query it is given, connectby() reads the table it names."""
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS tablefunc")
        _refused(
            conn,
            "SELECT * FROM crosstab('SELECT id, 1, salary FROM hr.pay') AS c(id int, s numeric)",
            "no-pay",
        )
        _refused(
            conn,
            "SELECT * FROM connectby('hr.pay', 'id', 'id', '1', 0) AS t(a int, b int, l int)",
            "no-pay",
        )
        rows = conn.execute(
            "SELECT * FROM crosstab('SELECT id, 1, diagnosis FROM esc') AS c(id int, d text)"
        ).fetchall()
        assert rows and SECRET not in repr(rows)


@pytest.mark.parametrize(
    "assignment",
    [
        # the first `:=` of the text is inside a string: what followed it was read as
        # a string and a comment operator, not as the query it is
        "a[length(':=')] := (SELECT salary::text FROM hr.pay LIMIT 1) /* ' */ || ''",
        # a subscript of the assignment's target runs too
        "a[(SELECT salary::int FROM hr.pay LIMIT 1)] := 'x'",
    ],
)
def test_plpgsql_assignments_are_read_whole(gw: RunningGateway, assignment: str) -> None:
    notices: list[str] = []
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        _refused(
            conn,
            f"DO $$DECLARE a text[]; BEGIN {assignment}; "
            "RAISE NOTICE '% %', a, array_lower(a, 1); END$$",
            "no-pay",
        )
    assert not any("987654" in n for n in notices)


def test_a_preload_library_stored_for_later_sessions_is_a_load(
    gw: RunningGateway, cluster: PgCluster
) -> None:
    """`ALTER ROLE ... SET local_preload_libraries` loads a library into every later
    session of the role: the LOAD that baseline/deny-load refuses, one session later."""
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            _refused(
                conn, "ALTER ROLE app SET local_preload_libraries = 'auto_explain'", "deny-load"
            )
            conn.execute("ALTER ROLE app RESET local_preload_libraries")
    finally:
        cluster.psql("postgres", "ALTER ROLE app RESET local_preload_libraries")


def test_column_statistics_are_a_read_of_every_table(gw: RunningGateway) -> None:
    """pg_stats shows values sampled from every column (most_common_vals)."""
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.execute("ANALYZE esc")
        _refused(conn, "SELECT most_common_vals FROM pg_stats WHERE tablename = 'pay'", "no-pay")


def test_other_sessions_statement_texts_are_masked_under_column_rules(
    cluster: PgCluster, tmp_path: Path
) -> None:
    """pg_stat_activity.query shows every session's last statement, constants included."""
    policy = {
        "name": "m",
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
        tmp_path, cluster, extra={"policies": [policy]}, connection_extra={"policies": ["m"]}
    )
    try:
        with psycopg.connect(gateway.dsn(), autocommit=True) as other:
            other.execute(f"SELECT count(*) FROM esc WHERE diagnosis = '{SECRET}'")
            with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
                conn.execute("ANALYZE esc")
                rows = conn.execute("SELECT query FROM pg_stat_activity").fetchall()
                assert rows and SECRET not in repr(rows)
                rows = conn.execute(
                    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'esc'"
                ).fetchall()
                assert rows and SECRET not in repr(rows)
    finally:
        gateway.proc.stop()


@pytest.mark.parametrize(
    "sql",
    [
        # renamed, leak_fn would be called under a name no rule has
        "ALTER FUNCTION leak_fn() RENAME TO ok_fn",
        "ALTER FUNCTION public.leak_fn() SET SCHEMA vault",
        # a rule on a schema covers its functions and other objects
        "SELECT vault.open()",
        "DROP FUNCTION vault.open()",
        "ALTER FUNCTION vault.open() RENAME TO opened",
    ],
)
def test_functions_and_schemas_a_rule_names_are_seen_in_ddl(gw: RunningGateway, sql: str) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-leak-fn|no-vault"):
            conn.execute(sql)
