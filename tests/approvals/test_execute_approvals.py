"""An approval covers one execution: a prepared statement held and approved at Parse is
held again at its next Execute (prepare once, run many), unless a grant covers it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.approvals.test_end_to_end import bearer, pending_for
from tests.conftest import start_gateway
from wardgate.testing.pgcluster import PgCluster, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    api_port = free_port()
    gateway = start_gateway(tmp_path_factory.mktemp("gw-exec"), pg_cluster, api_port=api_port)
    gateway.api = f"http://127.0.0.1:{api_port}"  # type: ignore[attr-defined]
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def _fill(gw: Any, table: str) -> None:
    gw.cluster.psql(
        "orders",
        f"create table if not exists {table} (id int); grant all on {table} to app; "
        f"insert into {table} select generate_series(1, 3)",
    )


def _count(gw: Any, table: str) -> str:
    return gw.cluster.psql("orders", f"select count(*) from {table}")


class Run:
    """`sql` as a prepared statement on `conn`, in a thread."""

    def __init__(self, conn: psycopg.Connection, sql: str) -> None:
        self.error: psycopg.Error | None = None
        self.rowcount: int | None = None
        self.thread = threading.Thread(target=self._go, args=(conn, sql), daemon=True)
        self.thread.start()

    def _go(self, conn: psycopg.Connection, sql: str) -> None:
        try:
            self.rowcount = conn.execute(sql, prepare=True).rowcount
        except psycopg.Error as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(20)
        assert not self.thread.is_alive(), "the statement never finished"


def _decide(gw: Any, table: str, verb: str, **body: Any) -> dict[str, Any]:
    item = pending_for(gw, table)
    r = httpx.post(
        f"{gw.api}/api/approvals/{item['id']}/{verb}", headers=bearer("alice"), json=body
    )
    assert r.status_code == 200, r.text
    return item


def test_second_execute_of_an_approved_prepared_statement_is_held_again(gw: Any) -> None:
    _fill(gw, "xa_once")
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        sql = "DELETE FROM xa_once"  # no WHERE: the baseline holds it for review
        run = Run(conn, sql)
        first = _decide(gw, "xa_once", "approve", reason="first run")
        run.join()
        assert run.error is None and run.rowcount == 3
        _fill(gw, "xa_once")
        run = Run(conn, sql)  # psycopg reuses the prepared statement: Bind + Execute only
        time.sleep(1.0)
        assert _count(gw, "xa_once") == "3", "the second execution ran without an approval"
        second = _decide(gw, "xa_once", "deny", reason="not twice")
        assert second["id"] != first["id"]
        run.join()
        assert run.error is not None and "not twice" in str(run.error)
        assert _count(gw, "xa_once") == "3"
        # the session goes on, and a third execution can be approved on its own
        run = Run(conn, sql)
        _decide(gw, "xa_once", "approve", reason="third run")
        run.join()
        assert run.error is None and run.rowcount == 3
    assert _count(gw, "xa_once") == "0"


def test_a_grant_covers_later_executions(gw: Any) -> None:
    _fill(gw, "xa_grant")
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        sql = "DELETE FROM xa_grant"
        run = Run(conn, sql)
        _decide(gw, "xa_grant", "approve", reason="for a while", **{"for": "10m"})
        run.join()
        assert run.error is None and run.rowcount == 3
        _fill(gw, "xa_grant")
        run = Run(conn, sql)  # held again, and answered at once by the grant
        run.join()
        assert run.error is None and run.rowcount == 3
    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "verify", "--config", str(gw.config)],
        capture_output=True, text=True, env={**os.environ, **gw.env}, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_hold_answered_at_once_keeps_the_pipeline_in_order(gw: Any) -> None:
    """A statement held while the batch before it waits for its events to be durable,
    answered at once by a grant: the earlier batch reaches the target first, then the
    held statement, and every statement of the pipeline runs once, in order."""
    _fill(gw, "xa_pipe")
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        run = Run(conn, "DELETE FROM xa_pipe")
        _decide(gw, "xa_pipe", "approve", reason="grant for the pipeline", **{"for": "10m"})
        run.join()
        assert run.error is None and run.rowcount == 3
        for _ in range(5):
            with conn.pipeline():
                conn.execute("INSERT INTO xa_pipe VALUES (1), (2)")
                conn.execute("INSERT INTO xa_pipe VALUES (3)")
                cur = conn.execute("DELETE FROM xa_pipe")  # held, the grant answers
                conn.execute("INSERT INTO xa_pipe VALUES (4)")
            assert cur.rowcount == 3
            assert conn.execute("SELECT array_agg(id) FROM xa_pipe").fetchone() == ([4],)
            conn.execute("DELETE FROM xa_pipe WHERE id = 4")
