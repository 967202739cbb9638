"""The bypass corpus end to end: psql (simple protocol), psycopg and asyncpg (extended
protocol) through a real gateway to a real PostgreSQL whose own statement log proves that
nothing refused ever reached it. Allowed statements must get through (no false alarms).
Also: the session stays usable after a refusal, and a refusal inside a transaction block
fails the transaction as PostgreSQL would."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from tests.corpus.load import SCHEMA_SQL, load_cases
from wardgate.testing.gateway_process import AGENT_TOKENS
from wardgate.testing.pgcluster import PgCluster, find_pg_bin

pytestmark = pytest.mark.skipif(
    find_pg_bin() is None, reason="PostgreSQL server binaries not found: apt-get install postgresql"
)

BLOCKED = [c for c in load_cases("blocked") if c.runnable]
ALLOWED = [c for c in load_cases("allowed") if c.runnable]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory):
    """A cluster that logs every statement it receives, and a gateway in front of it."""
    cluster = PgCluster.create()
    cluster.psql("postgres", "ALTER SYSTEM SET log_statement = 'all'")
    cluster.psql("postgres", "SELECT pg_reload_conf()")
    subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(cluster.socket_dir),
            "-p",
            str(cluster.port),
            "-U",
            "app",
            "-d",
            "orders",
            "-f",
            str(SCHEMA_SQL),
        ],
        check=True,
        capture_output=True,
    )
    gw = start_gateway(
        tmp_path_factory.mktemp("corpus"),
        cluster,
        extra={"approvals": {"default_ttl": "0.3s", "poll_interval": "0.1s"}},
    )
    try:
        yield gw
    finally:
        gw.proc.stop()
        cluster.destroy()


def _server_log(cluster: PgCluster) -> str:
    return (cluster.directory / "server.log").read_text(errors="replace")


def _psql(gw: RunningGateway, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", gw.dsn(), "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _run_blocked_psql(gw: RunningGateway, case) -> str | None:
    r = _psql(gw, case.sql)
    if r.returncode == 0:
        return f"{case.id}: ran through psql"
    if "wardgate:" not in r.stderr:
        return f"{case.id}: refused, but not by wardgate: {r.stderr.strip()[:200]}"
    return None


# psql runs backslash commands itself (`\\!` is a shell), and each -c would be its own
# session for `setup`; those cases go through psycopg below
PSQL_CASES = [c for c in BLOCKED if not c.setup and not c.sql.lstrip().startswith("\\")]


def test_blocked_corpus_through_psql_never_reaches_the_target(logged: RunningGateway) -> None:
    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(lambda c: _run_blocked_psql(logged, c), PSQL_CASES) if p]
    assert not problems, "\n".join(problems)
    log = _server_log(logged.cluster)
    leaked = [c.sql for c in PSQL_CASES if f"statement: {c.sql}" in log]
    assert not leaked, f"the target received refused statements: {leaked[:5]}"
    assert "wardgate refused this statement" in log


def _run_blocked_psycopg(gw: RunningGateway, case) -> str | None:
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            for s in case.setup:
                try:
                    conn.execute(s)
                except psycopg.Error:
                    pass
            try:
                # a parameter list forces the extended protocol (Parse/Bind/Execute)
                conn.execute(case.sql, () if case.via == "parse" else None)
            except psycopg.errors.InsufficientPrivilege as exc:
                if "wardgate:" not in str(exc):
                    return f"{case.id}: 42501 not from wardgate"
                assert conn.execute("select 1").fetchone() == (1,)  # still usable
                return None
            except psycopg.Error as exc:
                if "wardgate:" in str(exc):
                    return None
                return f"{case.id}: refused, but not by wardgate: {exc}"
            return f"{case.id}: ran through psycopg"
    except psycopg.Error as exc:
        return f"{case.id}: connection failed: {exc}"


def test_blocked_corpus_through_psycopg(logged: RunningGateway) -> None:
    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(lambda c: _run_blocked_psycopg(logged, c), BLOCKED) if p]
    assert not problems, "\n".join(problems)
    log = _server_log(logged.cluster)
    leaked = [
        c.sql
        for c in BLOCKED
        if f"statement: {c.sql}" in log or f"execute <unnamed>: {c.sql}" in log
    ]
    assert not leaked, f"the target received refused statements: {leaked[:5]}"


async def test_blocked_denials_through_asyncpg_extended_protocol(logged: RunningGateway) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=logged.port,
        user="ci-bot",
        password=AGENT_TOKENS["ci-bot"],
        database="orders",
        ssl=False,
    )
    problems = []
    try:
        for case in [c for c in BLOCKED if c.expect == "deny" and not c.setup]:
            try:
                await conn.fetch(case.sql)
                problems.append(f"{case.id}: ran through asyncpg")
            except asyncpg.PostgresError as exc:
                if "wardgate:" not in str(exc):
                    problems.append(f"{case.id}: not refused by wardgate: {exc}")
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()
    assert not problems, "\n".join(problems)


def test_allowed_corpus_gets_through(logged: RunningGateway) -> None:
    refused = []
    with psycopg.connect(logged.dsn(), autocommit=True) as conn:
        for case in ALLOWED:
            for s in case.setup:
                try:
                    conn.execute(s)
                except psycopg.Error:
                    pass
            try:
                conn.execute(case.sql, () if case.via == "parse" else None)
            except psycopg.Error as exc:
                if "wardgate:" in str(exc):
                    refused.append(f"{case.id}: {exc}")
    assert not refused, "false alarms:\n" + "\n".join(refused)


def test_refusal_inside_a_transaction_fails_it_like_postgres(logged: RunningGateway) -> None:
    logged.cluster.psql(
        "orders", "create table if not exists tx_probe (v int); grant all on tx_probe to app"
    )
    with psycopg.connect(logged.dsn()) as conn:
        conn.execute("insert into tx_probe values (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='denied by rule "baseline/'):
            conn.execute("drop table tx_probe")
        # as after any error: the transaction is aborted until ROLLBACK
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select count(*) from tx_probe").fetchone() == (0,)


def test_extended_protocol_refusal_discards_to_sync(logged: RunningGateway) -> None:
    with psycopg.connect(logged.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.pipeline():
                conn.execute("select %s::int", (1,))
                conn.execute("truncate orders", ())
                conn.execute("select %s::int", (2,))
        assert conn.execute("select %s::int", (3,)).fetchone() == (3,)
    assert logged.cluster.psql("orders", "select count(*) > 0 from orders") == "t"


def test_review_times_out_with_the_documented_message(logged: RunningGateway) -> None:
    before = logged.cluster.psql("orders", "select count(*) from t")
    with psycopg.connect(logged.dsn(), autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="timed out after"):
            conn.execute("delete from t")
        assert notices and notices[0].startswith("wardgate: approval ")
        assert 'requested (rule "baseline/' in notices[0]
    assert logged.cluster.psql("orders", "select count(*) from t") == before


def test_policy_check_cli_matches_the_gateway(logged: RunningGateway) -> None:
    import os
    import sys

    env = {**os.environ, **logged.env}

    def check(sql: str) -> int:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "wardgate",
                "policy",
                "check",
                "--config",
                str(logged.config),
                "--identity",
                "ci-bot",
                "--connection",
                "orders",
                sql,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        ).returncode

    assert check("select 1") == 0
    assert check("delete from t") == 3
    assert check("drop table t") == 4


def test_client_encoding_cannot_leave_utf8(logged: RunningGateway) -> None:
    """In SJIS, 0x95 0x5C is one character: `E'\\x95\\'` would end the literal for the target
    while the gateway (reading UTF-8) saw an escaped quote, hiding what follows."""
    import asyncpg  # noqa: F401 - the check below uses libpq through psycopg

    with pytest.raises(psycopg.OperationalError, match="client_encoding"):
        psycopg.connect(logged.dsn(client_encoding="SJIS"))
    with psycopg.connect(logged.dsn(), autocommit=True) as conn:
        for sql in (
            "SET client_encoding = 'SJIS'",
            "SET NAMES 'BIG5'",
            "SELECT set_config('client_encoding', 'GBK', false)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="deny-client-encoding"):
                conn.execute(sql)
        conn.execute("SET client_encoding = 'UTF8'")
        assert conn.execute("show client_encoding").fetchone() == ("UTF8",)


def test_standard_conforming_strings_stays_on(logged: RunningGateway) -> None:
    """With it off, `'x\\' , $$ ' ; DROP TABLE t; -- $$` ends its literal elsewhere for the
    target than for the parser the policy uses, and the DROP would run unseen."""
    with psycopg.connect(logged.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="deny-lexer-settings"):
            conn.execute("SET standard_conforming_strings = off")
        assert conn.execute("show standard_conforming_strings").fetchone() == ("on",)
        conn.execute("SELECT 'x\\' , $$ ' ; DROP TABLE t; -- $$")
    assert logged.cluster.psql("orders", "select count(*) >= 0 from t") == "t"
