"""Failed logins per client address: past `auth_failure_limit` further attempts are
refused before authentication, and the record keeps one event per block, not per try.

Measured before the limit: one client ran ~128 failed logins/s, each a 3.6 KB
auth_failure event (~1.6 GB/h), until the full store refused every agent's statements.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest

from tests.conftest import start_gateway
from wardgate.identity.throttle import AuthFailureLimiter, client_ip
from wardgate.testing.gateway_process import AGENT_TOKENS
from wardgate.testing.pgcluster import free_port

LIMIT = {"failures": 3, "window": "20s", "block": "3s"}


def _auth_events(directory: Path) -> list:
    from wardgate.audit.store import AuditStore

    store = AuditStore.open(str(directory / "audit.db"))
    try:
        return list(store.events(kind="auth_failure"))
    finally:
        store.close()


class _FromOtherAddress:
    """A TCP forwarder whose connections to the gateway leave from 127.0.0.2: the gateway
    sees a second client address (libpq cannot choose its source address)."""

    def __init__(self, target_port: int, source: str = "127.0.0.2") -> None:
        self.target_port, self.source = target_port, source
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(
                ("127.0.0.1", self.target_port), source_address=(self.source, 0)
            )
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _can_bind(addr: str) -> bool:
    try:
        with socket.create_server((addr, 0)):
            return True
    except OSError:
        return False


def _connect(port: int, token: str, *, host: str = "127.0.0.1") -> psycopg.Connection:
    return psycopg.connect(
        f"host={host} port={port} user=ci-bot password={token} dbname=orders sslmode=disable",
        connect_timeout=10,
    )


def test_failed_logins_block_the_address_with_one_event_per_block(
    pg_cluster, tmp_path: Path
) -> None:
    api_port = free_port()
    gw = start_gateway(
        tmp_path, pg_cluster, api_port=api_port, connection_extra={"auth_failure_limit": LIMIT}
    )
    good = AGENT_TOKENS["ci-bot"]
    try:
        for _ in range(3):  # up to the limit: the usual refusal, one event each
            with pytest.raises(psycopg.OperationalError) as info:
                _connect(gw.port, "wrong-token")
            assert "password authentication failed" in str(info.value)
        # blocked: even the right token is refused, before authentication, natively
        for _ in range(5):
            with pytest.raises(psycopg.OperationalError) as info:
                _connect(gw.port, good)
            msg = str(info.value)
            assert "FATAL:  wardgate: too many failed logins" in msg
            assert "too many failed logins from 127.0.0.1" in msg
            assert "retry in" in msg and "auth_failure_limit" in msg
            assert "token" not in msg and "password" not in msg  # no hint at what was wrong
        with pytest.raises(asyncpg.PostgresError) as ainfo:  # the SQLSTATE, as asyncpg sees it
            asyncio.run(
                asyncpg.connect(
                    host="127.0.0.1", port=gw.port, user="ci-bot", password=good,
                    database="orders", ssl=False, timeout=10,
                )
            )  # fmt: skip
        assert (ainfo.value.sqlstate, ainfo.value.severity) == ("28000", "FATAL")
        # another address is not affected
        if _can_bind("127.0.0.2"):
            fwd = _FromOtherAddress(gw.port)
            with _connect(fwd.port, good) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        metrics = httpx.get(f"http://127.0.0.1:{api_port}/metrics").text
        assert 'wardgate_auth_blocked_total{connection="orders"} 6' in metrics
        # the block ends by itself; its summary is recorded without another attempt
        deadline = time.monotonic() + 10
        while True:
            ended = [
                e
                for e in _auth_events(tmp_path)
                if e.rule == "gateway/auth-failure-limit" and e.meta["block"] == "ended"
            ]
            if ended or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        with _connect(gw.port, good) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        gw.proc.stop()

    events = _auth_events(tmp_path)
    failures = [e for e in events if e.rule == "gateway/authentication"]
    assert len(failures) == 3 and all(e.meta["reason"] == "bad token" for e in failures)
    blocks = [e for e in events if e.rule == "gateway/auth-failure-limit"]
    assert [e.meta["block"] for e in blocks] == ["started", "ended"], blocks
    started, ended = blocks
    if _can_bind("127.0.0.2"):
        from wardgate.audit.store import AuditStore

        store = AuditStore.open(str(tmp_path / "audit.db"))
        try:
            starts = [e.meta["client_addr"] for e in store.events(kind="session_start")]
        finally:
            store.close()
        assert any(a.startswith("127.0.0.2:") for a in starts), starts
    for e in blocks:
        assert e.meta["reason"] == "too many failed logins"
        assert e.meta["client_addr"] == "127.0.0.1"
        assert e.verdict == "deny"
    assert started.meta["failures"] == 3 and started.identity == "ci-bot"
    assert ended.meta["refused"] == 6
    assert ended.meta["first_refused"] <= ended.meta["last_refused"] <= ended.meta["until"]
    assert "ended_early" not in ended.meta


def test_a_block_still_holding_is_summarised_when_the_gateway_stops(
    pg_cluster, tmp_path: Path
) -> None:
    gw = start_gateway(
        tmp_path,
        pg_cluster,
        connection_extra={"auth_failure_limit": {"failures": 2, "window": "1m", "block": "1h"}},
    )
    try:
        for _ in range(4):
            with pytest.raises(psycopg.OperationalError):
                _connect(gw.port, "wrong-token")
    finally:
        gw.proc.stop()
    blocks = [e for e in _auth_events(tmp_path) if e.rule == "gateway/auth-failure-limit"]
    assert [e.meta["block"] for e in blocks] == ["started", "ended"]
    assert blocks[1].meta["refused"] == 2 and blocks[1].meta["ended_early"] is True


# ------------------------------------------------------------------ the limiter alone


def test_limiter_counts_in_a_sliding_window() -> None:
    lim = AuthFailureLimiter(3, 10.0, 5.0)
    assert lim.failure("a", 0) is None
    assert lim.failure("a", 5) is None
    assert lim.failure("a", 11) is None  # the one at 0 left the window
    b = lim.failure("a", 12)
    assert b is not None and b.until == 17
    assert lim.refused("a", 13) is b and lim.refused("b", 13) is None
    assert lim.failure("a", 14) is None  # begun before the block: not a second block
    assert lim.take_ended(16) == []
    assert lim.refused("a", 17) is None  # over
    (ended,) = lim.take_ended(17)
    assert ended.refused == 1 and ended.first_refused == 13 and not ended.ended_early
    assert lim.failure("a", 18) is None  # counting starts afresh


def test_limiter_memory_is_bounded_and_forgotten_blocks_are_still_summarised() -> None:
    lim = AuthFailureLimiter(1, 60.0, 60.0, max_addresses=100)
    for i in range(1000):
        lim.failure(f"10.0.{i // 256}.{i % 256}", float(i))
    assert lim.blocked == 100 and len(lim._recent) == 0
    ended = lim.take_ended(950.0)
    assert len(ended) == 900 and all(b.ended_early for b in ended)
    lim2 = AuthFailureLimiter(5, 60.0, 60.0, max_addresses=100)
    for i in range(1000):
        lim2.failure(f"h{i}", float(i))
    assert len(lim2._recent) == 100


def test_client_ip_ignores_port_zone_and_ipv4_mapping() -> None:
    assert client_ip("::ffff:10.1.2.3") == "10.1.2.3"
    assert client_ip("fe80::1%eth0") == "fe80::1"
    assert client_ip("127.0.0.1") == "127.0.0.1"


def test_config_check_shows_the_limit_and_warns_without_it(pg_cluster, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from wardgate.testing.gateway_process import write_config

    def check(conn_extra: dict) -> subprocess.CompletedProcess:
        cfg, env = write_config(tmp_path, pg_cluster, connection_extra=conn_extra)
        return subprocess.run(
            [sys.executable, "-m", "wardgate", "config", "check", "--config", str(cfg)],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, **env, "COLUMNS": "200"},
        )  # fmt: skip

    r = check({})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed logins orders" in r.stdout
    assert "10 failed logins in 60s from one address block it for 60s" in r.stdout
    r = check({"auth_failure_limit": None})
    assert " warn " in r.stdout and "auth_failure_limit: null" in r.stdout
    r = check({"auth_failure_limit": {"failures": 0, "window": "0s"}})
    assert r.returncode == 2 and "auth_failure_limit" in r.stdout + r.stderr


def test_the_report_shows_a_blocks_size() -> None:
    from wardgate.audit.report import _auth_reason

    ended = {"reason": "too many failed logins", "block": "ended", "refused": 12614,
             "first_refused": "t1", "last_refused": "t2"}  # fmt: skip
    assert _auth_reason(ended) == (
        "too many failed logins: block ended, 12614 attempts refused (t1 to t2)"
    )
    assert _auth_reason({"reason": "bad token"}) == "bad token"
