"""Real clients through a real gateway to a real PostgreSQL: psql, psycopg, asyncpg,
SQLAlchemy, pgbench. Each test checks what the client got and, where it matters, what
the target holds and what the gateway recorded."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import psycopg
import pytest

from tests.conftest import RunningGateway


def psql(
    gw: RunningGateway, sql: str, *args: str, identity: str = "ci-bot", check: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", *args, gw.dsn(identity), "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def cli(gw: RunningGateway, *args: str) -> subprocess.CompletedProcess:
    import os
    import sys

    return subprocess.run(
        [sys.executable, "-m", "wardgate", *args, "--config", str(gw.config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **gw.env},
    )


def test_psql_simple_and_multi_statement(gateway: RunningGateway) -> None:
    out = psql(gateway, "select 40 + 2; select 'hello'").stdout.split()
    assert out == ["42", "hello"]


def test_psycopg_extended_and_prepared(gateway: RunningGateway) -> None:
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        conn.execute("create table if not exists t_ext (id int primary key, name text)")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into t_ext values (%s, %s) on conflict do nothing",
                [(i, f"n{i}") for i in range(20)],
            )
            for i in range(8):  # psycopg prepares after 5 executions
                assert cur.execute(
                    "select name from t_ext where id = %s", (i,), prepare=True
                ).fetchone() == (f"n{i}",)
        with conn.pipeline():
            c1 = conn.execute("select count(*) from t_ext")
            c2 = conn.execute("select max(id) from t_ext where id < %s", (10,))
        assert c1.fetchone() == (20,) and c2.fetchone() == (9,)
    assert gateway.cluster.psql("orders", "select count(*) from t_ext") == "20"


def test_psycopg_server_side_cursor_and_transactions(gateway: RunningGateway) -> None:
    with psycopg.connect(gateway.dsn()) as conn:
        with conn.cursor(name="big") as cur:
            cur.itersize = 100
            cur.execute("select g from generate_series(1, 1000) g")
            assert sum(r[0] for r in cur) == 500500
        conn.rollback()
        conn.execute("create table if not exists t_tx (v int)")
        conn.commit()
        conn.execute("insert into t_tx values (1)")
        conn.rollback()
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select 1/0")
        conn.rollback()
        conn.execute("insert into t_tx values (2)")
        conn.commit()
    assert gateway.cluster.psql("orders", "select string_agg(v::text, ',') from t_tx") == "2"


def test_copy_both_ways(gateway: RunningGateway) -> None:
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        conn.execute("create table if not exists t_copy (id int, note text)")
        with conn.cursor().copy("copy t_copy from stdin") as cp:
            for i in range(1000):
                cp.write_row((i, f"row {i}"))
        out = []
        with conn.cursor().copy("copy (select * from t_copy order by id) to stdout") as cp:
            for row in cp.rows():
                out.append(row)
    assert len(out) == 1000 and out[5] == ("5", "row 5")
    assert gateway.cluster.psql("orders", "select count(*) from t_copy") == "1000"


def test_listen_notify(gateway: RunningGateway) -> None:
    with (
        psycopg.connect(gateway.dsn(), autocommit=True) as listener,
        psycopg.connect(gateway.dsn(), autocommit=True) as sender,
    ):
        listener.execute("listen jobs")
        sender.execute("notify jobs, 'build 17 done'")
        got = next(listener.notifies(timeout=10))
        assert (got.channel, got.payload) == ("jobs", "build 17 done")


async def test_asyncpg(gateway: RunningGateway) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from wardgate.testing.gateway_process import AGENT_TOKENS

    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=gateway.port,
        user="ci-bot",
        password=AGENT_TOKENS["ci-bot"],
        database="orders",
        ssl=False,
    )
    try:
        assert await conn.fetchval("select $1::int * 2", 21) == 42
        stmt = await conn.prepare("select g, g::text from generate_series(1, $1::int) g")
        rows = await stmt.fetch(50)
        assert len(rows) == 50 and rows[-1][1] == "50"
        async with conn.transaction():
            await conn.execute("create table if not exists t_apg (v int)")
            await conn.executemany("insert into t_apg values ($1)", [(i,) for i in range(10)])
        assert await conn.fetchval("select count(*) from t_apg") == 10
    finally:
        await conn.close()


def test_sqlalchemy(gateway: RunningGateway) -> None:
    sa = pytest.importorskip("sqlalchemy")
    from wardgate.testing.gateway_process import AGENT_TOKENS

    url = f"postgresql+psycopg://ci-bot:{AGENT_TOKENS['ci-bot']}@127.0.0.1:{gateway.port}/orders"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    items = sa.Table(
        "t_sa", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.String)
    )
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(items.insert(), [{"id": i, "label": f"l{i}"} for i in range(5)])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() == 5
    engine.dispose()


@pytest.mark.skipif(
    shutil.which("pgbench") is None, reason="pgbench not found: apt-get install postgresql-contrib"
)
def test_pgbench_through_gateway(gateway: RunningGateway) -> None:
    c = gateway.cluster
    # initialise on the target directly (pgbench -i drops tables, which the baseline denies)
    subprocess.run(
        [
            "pgbench",
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            str(c.socket_dir),
            "-p",
            str(c.port),
            "-U",
            "postgres",
            "orders",
        ],
        check=True,
        capture_output=True,
    )
    c.psql("orders", "grant all on all tables in schema public to app")
    from wardgate.testing.gateway_process import AGENT_TOKENS

    env = {"PGPASSWORD": AGENT_TOKENS["ci-bot"], "PATH": "/usr/bin:/bin"}
    for mode in ("simple", "prepared"):
        r = subprocess.run(
            [
                "pgbench",
                "-n",
                "-S",
                "-M",
                mode,
                "-c",
                "4",
                "-T",
                "2",
                "-h",
                "127.0.0.1",
                "-p",
                str(gateway.port),
                "-U",
                "ci-bot",
                "orders",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert "number of failed transactions: 0" in r.stdout
    r = subprocess.run(
        [
            "pgbench",
            "-n",
            "-c",
            "2",
            "-T",
            "2",
            "-h",
            "127.0.0.1",
            "-p",
            str(gateway.port),
            "-U",
            "ci-bot",
            "orders",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_cancel_reaches_the_target_backend(gateway: RunningGateway) -> None:
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        timer = threading.Timer(1.0, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(30)")
        assert time.monotonic() - started < 10
        assert conn.execute("select 1").fetchone() == (1,)  # session still usable


def test_psql_cancel_with_sigint(gateway: RunningGateway) -> None:
    import signal

    p = subprocess.Popen(
        ["psql", "-X", gateway.dsn(), "-c", "select pg_sleep(30)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=15)
    assert "canceling statement due to user request" in err


def test_sessions_and_replay(gateway: RunningGateway) -> None:
    psql(gateway, "select 'replay-marker-1' as m, 7 as n", "-v", "x=1")
    r = cli(gateway, "sessions", "--identity", "ci-bot", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows and all(row["identity"] == "ci-bot" for row in rows)
    session = next(row for row in reversed(rows) if row.get("application_name") == "psql")
    for key in (
        "id",
        "identity",
        "connection",
        "client_addr",
        "application_name",
        "start",
        "end",
        "statements",
        "status",
    ):
        assert key in session
    r = cli(gateway, "replay", session["id"], "--json")
    assert r.returncode == 0, r.stderr
    items = [json.loads(line) for line in r.stdout.splitlines()]
    cmd = next(
        i for i in items if i["kind"] == "command" and "replay-marker-1" in (i.get("text") or "")
    )
    assert cmd["verdict"] == "allow"
    assert cmd["result"]["tag"] == "SELECT 1"
    assert cmd["result"]["row_values"] == [["replay-marker-1", "7"]]
    r = cli(gateway, "replay", session["id"])
    assert "replay-marker-1" in r.stdout and "SELECT 1" in r.stdout


def test_extended_parameters_are_recorded(gateway: RunningGateway) -> None:
    with psycopg.connect(gateway.dsn(), autocommit=True, application_name="param-check") as conn:
        conn.execute("select %s::text as p", ("bound-value-xyz",))
    r = cli(gateway, "sessions", "--json")
    session = next(json.loads(s) for s in reversed(r.stdout.splitlines()) if "param-check" in s)
    items = [
        json.loads(line)
        for line in cli(gateway, "replay", session["id"], "--json").stdout.splitlines()
    ]
    cmd = next(i for i in items if i["kind"] == "command" and i.get("parameters"))
    assert cmd["parameters"] == ["bound-value-xyz"]
    assert cmd["result"]["row_values"] == [["bound-value-xyz"]]
