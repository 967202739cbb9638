"""Held statements through a real `wardgate serve`, real PostgreSQL and psycopg.

A DELETE without WHERE (baseline: review) is held; reviewers decide over the HTTP API
(and the CLI); the test checks what the agent got, what the target holds and the events.
"""

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

from tests.conftest import RunningGateway, start_gateway
from wardgate.testing.gateway_process import AGENT_TOKENS
from wardgate.testing.pgcluster import PgCluster, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    api_port = free_port()
    gateway = start_gateway(tmp_path_factory.mktemp("gw-approvals"), pg_cluster, api_port=api_port)
    gateway.api = f"http://127.0.0.1:{api_port}"  # type: ignore[attr-defined]
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {AGENT_TOKENS[name]}"}


class HeldStatement:
    """Run `sql` on a gateway session in a thread; collect notices, result or error."""

    def __init__(self, gw: RunningGateway, table: str, sql: str) -> None:
        self.notices: list[str] = []
        self.rowcount: int | None = None
        self.error: psycopg.Error | None = None
        self.conn = psycopg.connect(gw.dsn(), autocommit=True, application_name="e2e-job")
        self.conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id int)")
        self.conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 3)")
        self.conn.execute("SET wardgate.reason = 'purge e2e rows'")
        self.thread = threading.Thread(target=self._run, args=(sql,), daemon=True)
        self.thread.start()

    def _run(self, sql: str) -> None:
        try:
            self.rowcount = self.conn.execute(sql).rowcount
        except psycopg.Error as exc:
            self.error = exc

    def finish(self, timeout: float = 20) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the held statement never finished"


def pending_for(gw: Any, table: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{gw.api}/api/approvals", headers=bearer("alice"), timeout=5)
        assert r.status_code == 200, r.text
        for item in r.json()["approvals"]:
            if table in item["statement"]:
                return item
        time.sleep(0.1)
    raise AssertionError(f"no pending approval for {table}")


def test_http_approve_runs_the_held_delete(gw: Any) -> None:
    held = HeldStatement(gw, "e2e_approve", "DELETE FROM e2e_approve")
    item = pending_for(gw, "e2e_approve")
    assert item["identity"] == "ci-bot" and item["reason"] == "purge e2e rows"
    assert item["application_name"] == "e2e-job"
    # the agent cannot approve its own request, and an agent is not a reviewer
    r = httpx.post(f"{gw.api}/api/approvals/{item['id']}/approve", headers=bearer("ci-bot"))
    assert r.status_code == 403
    assert gw.cluster.psql("orders", "select count(*) from e2e_approve") == "3"
    r = httpx.post(
        f"{gw.api}/api/approvals/{item['id']}/approve",
        headers=bearer("alice"),
        json={"reason": "ok for e2e"},
    )
    assert r.status_code == 200, r.text
    held.finish()
    assert held.error is None and held.rowcount == 3
    assert any(f"approval {item['id']} requested" in n for n in held.notices), held.notices
    assert gw.cluster.psql("orders", "select count(*) from e2e_approve") == "0"
    # the session is still usable
    assert held.conn.execute("select 1").fetchone() == (1,)
    held.conn.close()


def test_http_deny_refuses_with_the_reason(gw: Any) -> None:
    held = HeldStatement(gw, "e2e_deny", "DELETE FROM e2e_deny")
    item = pending_for(gw, "e2e_deny")
    r = httpx.post(
        f"{gw.api}/api/approvals/{item['id']}/deny",
        headers=bearer("bob"),
        json={"reason": "use a WHERE clause"},
    )
    assert r.status_code == 200, r.text
    held.finish()
    assert held.error is not None and held.error.sqlstate == "42501"
    assert "use a WHERE clause" in str(held.error)
    assert gw.cluster.psql("orders", "select count(*) from e2e_deny") == "3"
    assert held.conn.execute("select 1").fetchone() == (1,)
    held.conn.close()


def test_cli_approve_with_grant_then_the_job_runs_without_waiting(gw: Any) -> None:
    held = HeldStatement(gw, "e2e_cli", "DELETE FROM e2e_cli")
    item = pending_for(gw, "e2e_cli")
    proc = subprocess.run(
        [sys.executable, "-m", "wardgate", "approvals", "approve", item["id"], "--as", "alice",
         "--for", "1h", "--config", str(gw.config)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **gw.env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    held.finish()
    assert held.error is None and held.rowcount == 3
    # the grant covers the same normalized statement by the same identity
    held.conn.execute("INSERT INTO e2e_cli SELECT generate_series(1, 2)")
    t0 = time.monotonic()
    assert held.conn.execute("DELETE FROM e2e_cli").rowcount == 2
    assert time.monotonic() - t0 < 2
    held.conn.close()


def _scrape(gw: Any) -> dict[str, float]:
    r = httpx.get(f"{gw.api}/metrics", timeout=5)
    assert r.status_code == 200
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_count_what_the_gateway_did(gw: Any) -> None:
    before = _scrape(gw)
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS metrics_people (email text)")
        conn.execute("INSERT INTO metrics_people VALUES ('ann.lee@example.com')")
        assert conn.execute("SELECT email FROM metrics_people").fetchall() == [("[EMAIL]",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE metrics_people")
        live = _scrape(gw)
        assert live['wardgate_sessions_active{connection="orders"}'] >= 1
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(gw.dsn(token="not-the-token"), connect_timeout=5)
    after = _scrape(gw)

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert delta('wardgate_statements_total{connection="orders",verdict="allow"}') == 3
    assert delta('wardgate_statements_total{connection="orders",verdict="deny"}') == 1
    assert (
        delta(
            'wardgate_statements_refused_total{connection="orders",verdict="deny",'
            'rule="baseline/deny-drop-table"}'
        )
        == 1
    )
    assert delta('wardgate_masked_values_total{connection="orders",entity="EMAIL_ADDRESS"}') == 1
    assert delta('wardgate_sessions_total{connection="orders"}') == 1
    assert delta('wardgate_sessions_refused_total{reason="bad token"}') == 1
    deadline = time.monotonic() + 5  # the relay's close runs after the agent hung up
    while _scrape(gw).get('wardgate_sessions_active{connection="orders"}', 0) != before.get(
        'wardgate_sessions_active{connection="orders"}', 0
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert after["wardgate_audit_events"] > before["wardgate_audit_events"]
