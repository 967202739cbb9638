"""`wardgate serve --workers N`: several gateway processes on one port, one audit log."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.conftest import start_gateway
from wardgate.testing.pgcluster import PgCluster

pytestmark = pytest.mark.slow


def _verify(gw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "wardgate", "verify", "--config", str(gw.config),
         "--published", str(gw.directory / "published-checkpoints.txt")],
        capture_output=True, text=True, env={**os.environ, **gw.env}, timeout=120,
    )  # fmt: skip


def _workers(gw) -> list[psutil.Process]:  # type: ignore[no-untyped-def]
    kids = psutil.Process(gw.proc.proc.pid).children()
    return [k for k in kids if "wardgate.workers" in " ".join(k.cmdline())]


def test_sessions_spread_over_workers_into_one_verifiable_log(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, pg_cluster, extra={"workers": 2})
    try:
        assert len(gw.proc.ready["workers"]) == 2  # type: ignore[index]
        conns = [psycopg.connect(gw.dsn(), autocommit=True) for _ in range(16)]
        try:
            for i, c in enumerate(conns):
                assert c.execute("select %s::int + 1", (i,)).fetchone() == (i + 1,)
            per_worker = [
                len([n for n in w.net_connections() if n.raddr and n.raddr.port == pg_cluster.port])
                for w in _workers(gw)
            ]
            # SO_REUSEPORT: both workers took sessions (all 16 on one: p = 2 / 65536)
            assert sorted(per_worker)[0] > 0 and sum(per_worker) == 16, per_worker
            # a cancel lands on any worker; the one that issued the key acts on it
            for c in conns[:6]:
                timer = threading.Timer(0.3, c.cancel)
                timer.start()
                started = time.monotonic()
                with pytest.raises(psycopg.errors.QueryCanceled):
                    c.execute("select pg_sleep(20)")
                assert time.monotonic() - started < 10
        finally:
            for c in conns:
                c.close()
    finally:
        assert gw.proc.stop() == 0
    r = _verify(gw)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not yet signed" not in r.stdout
    db = sqlite3.connect(tmp_path / "audit.db")
    kinds = dict(db.execute("select kind, count(*) from events group by kind").fetchall())
    db.close()
    assert kinds["session_start"] == 16 and kinds["session_end"] == 16


def test_a_dead_worker_stops_the_gateway_with_an_error(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, pg_cluster, extra={"workers": 2})
    with psycopg.connect(gw.dsn(), autocommit=True) as c:
        c.execute("select 1")
    _workers(gw)[0].send_signal(signal.SIGKILL)
    assert gw.proc.proc.wait(60) == 1  # type: ignore[union-attr]
    assert '"worker_exited"' in gw.proc.stderr
    r = _verify(gw)
    assert r.returncode == 0, r.stdout + r.stderr


def test_statements_held_by_any_worker_are_released_by_the_api_of_worker_0(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    import httpx

    from tests.approvals.test_end_to_end import HeldStatement, bearer, pending_for
    from wardgate.testing.pgcluster import free_port

    api_port = free_port()
    gw = start_gateway(tmp_path, pg_cluster, api_port=api_port, extra={"workers": 2})
    gw.api = f"http://127.0.0.1:{api_port}"  # type: ignore[attr-defined]
    try:
        # six sessions: all on worker 0 has p = 1/64; each is held on its own worker
        held = [HeldStatement(gw, f"wk_appr_{i}", f"DELETE FROM wk_appr_{i}") for i in range(6)]
        for i in range(len(held)):
            item = pending_for(gw, f"wk_appr_{i}")
            r = httpx.post(
                f"{gw.api}/api/approvals/{item['id']}/approve",  # type: ignore[attr-defined]
                headers=bearer("alice"),
                json={"reason": "workers e2e"},
            )
            assert r.status_code == 200, r.text
        for i, h in enumerate(held):
            h.finish()
            assert h.error is None and h.rowcount == 3, (i, h.error)
            h.conn.close()
    finally:
        assert gw.proc.stop() == 0
    r = _verify(gw)
    assert r.returncode == 0, r.stdout + r.stderr


def _scrape(api: str, **headers: str) -> dict[str, float]:
    import httpx

    r = httpx.get(f"{api}/metrics", timeout=30, headers=headers)
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_count_every_worker_and_mark_a_stopped_one_down(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    from wardgate.testing.pgcluster import free_port

    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    gw = start_gateway(tmp_path, pg_cluster, api_port=api_port, extra={"workers": 2})
    stopped: int | None = None
    allow = 'wardgate_statements_total{connection="orders",verdict="allow"}'
    deny = 'wardgate_statements_total{connection="orders",verdict="deny"}'
    refused = (
        'wardgate_statements_refused_total{connection="orders",verdict="deny",'
        'rule="baseline/deny-drop-table"}'
    )
    try:
        before = _scrape(api)
        assert before['wardgate_worker_up{worker="0"}'] == 1
        assert before['wardgate_worker_up{worker="1"}'] == 1
        conns = [psycopg.connect(gw.dsn(), autocommit=True) for _ in range(16)]
        try:
            for i, c in enumerate(conns):
                assert c.execute("select %s::int + 1", (i,)).fetchone() == (i + 1,)
                c.execute("select 2")
                if i % 4 == 0:  # four refused statements, wherever their sessions are
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        c.execute("DROP TABLE wk_metrics_nothing")
            live = _scrape(api)
        finally:
            for c in conns:
                c.close()

        def delta(key: str) -> float:
            return live.get(key, 0) - before.get(key, 0)

        # per worker: both took sessions (all 16 on one: p = 2 / 65536) and statements
        per_worker = [live[f'wardgate_worker_sessions_active{{worker="{i}"}}'] for i in (0, 1)]
        assert min(per_worker) > 0 and sum(per_worker) == 16, per_worker
        for i in (0, 1):
            assert delta(f'wardgate_worker_statements_total{{worker="{i}"}}') > 0
        # the page sums them: what was run, not what worker 0 ran
        assert live['wardgate_sessions_active{connection="orders"}'] == 16
        assert delta('wardgate_sessions_total{connection="orders"}') == 16
        assert delta(allow) == 32 and delta(deny) == 4 and delta(refused) == 4
        assert (
            delta('wardgate_worker_statements_total{worker="0"}')
            + delta('wardgate_worker_statements_total{worker="1"}')
            == 36
        )
        assert live["wardgate_audit_events"] > before["wardgate_audit_events"]  # once, not 2x

        # a stopped worker: the scrape returns within the bound and says it is down; its
        # last figures stand in, so no counter goes backwards
        stopped = gw.proc.ready["workers"][1]  # type: ignore[index]
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.monotonic()
        down = _scrape(api)
        assert time.monotonic() - t0 < 8  # 2 s bound, a loaded machine
        assert down['wardgate_worker_up{worker="1"}'] == 0
        assert down['wardgate_worker_up{worker="0"}'] == 1
        for key in (allow, deny, refused, 'wardgate_sessions_total{connection="orders"}'):
            assert down[key] == live[key], key
        # a scraper's own timeout (Prometheus sends it) shortens the wait
        t0 = time.monotonic()
        quick = _scrape(api, **{"X-Prometheus-Scrape-Timeout-Seconds": "0.6"})
        assert time.monotonic() - t0 < 5
        assert quick['wardgate_worker_up{worker="1"}'] == 0 and quick[allow] == live[allow]
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        again = _scrape(api)
        assert again['wardgate_worker_up{worker="1"}'] == 1
        assert again[allow] == live[allow]
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        assert gw.proc.stop() == 0
