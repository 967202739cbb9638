"""Settings changed without SET or set_config() by name.

`UPDATE pg_settings SET setting = ... WHERE name = ...` is PostgreSQL's documented
equivalent of SET (the view has an update rule calling set_config). The policy read it
as an update of a catalog view: a search_path changed that way left unqualified names
read as public.<name>, and a standard_conforming_strings or client_encoding changed that
way made the target read statement bytes differently from the gateway.

Against a real gateway and PostgreSQL; the cluster is this module's own."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from wardgate.testing.pgcluster import PgCluster, find_pg_bin

pytestmark = pytest.mark.skipif(
    find_pg_bin() is None, reason="PostgreSQL server binaries not found: apt-get install postgresql"
)

SALARY = "987654.32"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    c = PgCluster.create()
    c.psql(
        "orders",
        "CREATE SCHEMA hr AUTHORIZATION app; "
        f"CREATE TABLE hr.pay (id int, salary numeric); INSERT INTO hr.pay VALUES (1, {SALARY}); "
        "ALTER TABLE hr.pay OWNER TO app; CREATE ROLE auditor NOLOGIN; GRANT auditor TO app",
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
        "rules": [{"name": "no-pay", "verdict": "deny", "objects": {"tables": ["hr.pay"]}}],
    }
    gateway = start_gateway(
        tmp_path_factory.mktemp("settings"),
        cluster,
        extra={
            "policies": [policy],
            "approvals": {"default_ttl": "0.3s", "poll_interval": "0.1s"},
        },
        connection_extra={"policies": ["p"]},
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def test_search_path_set_through_pg_settings_is_a_search_path_change(gw: RunningGateway) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        try:
            conn.execute("UPDATE pg_settings SET setting = 'hr' WHERE name = 'search_path'")
        except psycopg.errors.InsufficientPrivilege:
            return  # refused outright is also closed
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-pay"):
            conn.execute("SELECT salary FROM pay")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        "UPDATE pg_catalog.pg_settings s SET setting = 'SJIS' WHERE s.name = 'client_encoding'",
        "UPDATE pg_settings SET setting = 'auditor' WHERE name = 'role'",
        "UPDATE pg_settings SET setting = 'x' WHERE name = lower('ROLE')",
        "WITH s AS (SELECT 1) UPDATE pg_settings SET setting = 'off' "
        "WHERE name IN ('standard_conforming_strings')",
    ],
)
def test_lexer_and_role_settings_through_pg_settings_are_refused(
    gw: RunningGateway, sql: str
) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="baseline/|timed out"):
            conn.execute(sql)  # denied, or held (review-dynamic-sql) and not approved
        row = conn.execute(
            "SELECT current_setting('standard_conforming_strings'), "
            "current_setting('client_encoding'), current_user::text"
        ).fetchone()
        assert row == ("on", "UTF8", "app")


@pytest.mark.parametrize(
    "create, call",
    [
        (
            "CREATE VIEW public.sv AS SELECT * FROM pg_settings",
            "UPDATE sv SET setting = 'hr' WHERE name = 'search_path'",
        ),
        (
            "CREATE FUNCTION public.sp() RETURNS text LANGUAGE sql "
            "AS $$ SELECT set_config('search_path', 'hr', false) $$",
            "SELECT sp()",
        ),
        (
            "CREATE FUNCTION public.sq() RETURNS void LANGUAGE plpgsql "
            "AS $$ BEGIN SET search_path = hr; END $$",
            "SELECT sq()",
        ),
        (
            "CREATE TABLE public.t (x int); CREATE RULE r AS ON INSERT TO public.t "
            "DO ALSO SELECT set_config('search_path', 'hr', false)",
            "INSERT INTO t VALUES (1)",
        ),
    ],
)
def test_a_stored_object_cannot_change_a_later_sessions_search_path_unseen(
    gw: RunningGateway, create: str, call: str
) -> None:
    """Created in one session, used in the next: the later session's policy never saw
    the body that changes its search_path."""
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            notices: list[str] = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            # held for review (nobody approves within the TTL): nothing is created
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="timed out"):
                conn.execute(create)
            assert any("baseline/review-stored-search-path" in n for n in notices), notices
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            with pytest.raises((psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction)):
                conn.execute(call)
    finally:
        gw.cluster.psql(
            "orders",
            "DROP VIEW IF EXISTS public.sv; DROP FUNCTION IF EXISTS public.sp(); "
            "DROP FUNCTION IF EXISTS public.sq(); DROP TABLE IF EXISTS public.t",
        )


def test_a_functions_own_search_path_clause_is_not_held(gw: RunningGateway) -> None:
    """`CREATE FUNCTION ... SET search_path = ...` is restored when the function returns:
    the safe way to write one, not held."""
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        try:
            conn.execute(
                "CREATE FUNCTION public.ok() RETURNS int LANGUAGE sql "
                "SET search_path = pg_catalog, pg_temp AS 'SELECT 1'"
            )
            assert conn.execute("SELECT ok()").fetchone() == (1,)
        finally:
            gw.cluster.psql("orders", "DROP FUNCTION IF EXISTS public.ok()")
