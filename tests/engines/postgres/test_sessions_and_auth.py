"""Authentication, the session lifecycle, TLS on both sides, and credential hygiene."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from wardgate.testing.gateway_process import AGENT_TOKENS
from wardgate.testing.pgcluster import make_self_signed


def _events(gw: RunningGateway, kind: str) -> list[dict]:
    from wardgate.audit.store import AuditStore

    store = AuditStore.open(str(gw.directory / "audit.db"))
    try:
        return [
            {"identity": e.identity, "meta": e.meta, "verdict": e.verdict, "rule": e.rule}
            for e in store.events(kind=kind)
        ]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("identity", "token", "sqlstate", "reason"),
    [
        ("ci-bot", "wrong-token", "28P01", "bad token"),
        ("nobody", "whatever", "28P01", "unknown identity"),
        ("old-bot", AGENT_TOKENS["old-bot"], "28000", "identity disabled"),
    ],
)
async def test_refused_logins_are_fatal_and_recorded(
    gateway: RunningGateway, identity: str, token: str, sqlstate: str, reason: str
) -> None:
    import asyncpg

    with pytest.raises(asyncpg.PostgresError) as info:
        await asyncpg.connect(
            host="127.0.0.1",
            port=gateway.port,
            user=identity,
            password=token,
            database="orders",
            ssl=False,
            timeout=10,
        )
    assert info.value.sqlstate == sqlstate
    assert info.value.severity == "FATAL"
    failures = [e for e in _events(gateway, "auth_failure") if e["identity"] == identity]
    assert failures, "the refused attempt was not recorded"
    meta = failures[-1]["meta"]
    assert meta["reason"] == reason
    assert meta["client_addr"].startswith("127.0.0.1:")


def test_wrong_database_is_refused(gateway: RunningGateway) -> None:
    with pytest.raises(psycopg.OperationalError, match="serves database"):
        psycopg.connect(gateway.dsn(dbname="postgres"), connect_timeout=10)


def test_startup_options_cannot_change_role(gateway: RunningGateway) -> None:
    # `options=-c role=postgres` would change privileges with no statement to decide on
    with psycopg.connect(gateway.dsn(options="-c\\ role=postgres")) as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)


def test_tls_between_agent_and_gateway_and_gateway_and_target(pg_cluster, tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    gw = start_gateway(
        tmp_path / "gw",
        pg_cluster,
        target_tls="require",
        connection_extra={"tls": {"cert": str(cert), "key": str(key), "required": True}},
    )
    try:
        with psycopg.connect(gw.dsn(sslmode="require")) as conn:
            assert conn.pgconn.ssl_in_use
            # the gateway's own connection to the target is encrypted too
            assert conn.execute(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
            ).fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError, match="requires TLS"):
            psycopg.connect(gw.dsn(sslmode="disable"), connect_timeout=10)
    finally:
        gw.proc.stop()


def test_sigterm_closes_sessions_records_them_and_exits_zero(pg_cluster, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, pg_cluster)
    conn = psycopg.connect(gw.dsn(), autocommit=True)
    conn.execute("select 1")
    code = gw.proc.stop()
    assert code == 0
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1")
    conn.close()
    ends = _events(gw, "session_end")
    assert ends and ends[-1]["meta"]["reason"] == "gateway shutdown"
    assert (
        '"event": "session_start"' in gw.proc.stderr and '"event": "session_end"' in gw.proc.stderr
    )


def test_no_credential_anywhere(pg_cluster, tmp_path: Path) -> None:
    """The target password and agent tokens appear in no log line, record or error text."""
    gw = start_gateway(tmp_path, pg_cluster)
    errors: list[str] = []
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            conn.execute("select 1")
            try:
                conn.execute("select * from missing_table")
            except psycopg.Error as exc:
                errors.append(str(exc))
        for bad in ("wrong", AGENT_TOKENS["alice"] + "x"):
            try:
                psycopg.connect(gw.dsn(token=bad), connect_timeout=10)
            except psycopg.Error as exc:
                errors.append(str(exc))
    finally:
        gw.proc.stop()
    secrets = [pg_cluster.app_password, *AGENT_TOKENS.values()]
    blobs = {"stderr": gw.proc.stderr.encode(), "errors": "\n".join(errors).encode()}
    for f in tmp_path.iterdir():
        if f.is_file() and f.suffix != ".yaml":
            blobs[f.name] = f.read_bytes()
    assert any(name.startswith("audit.db") for name in blobs)
    for name, blob in blobs.items():
        for secret in secrets:
            assert secret.encode() not in blob, f"a credential appears in {name}"


def test_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "identities:\n  - name: ci-bot\n    token: plain-secret-inline\n"
        "connections:\n  - name: orders\n    listen: 127.0.0.1:6432\n"
        "    target: {host: 127.0.0.1, port: notaport, database: orders, user: app}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert f"{cfg}:3: identities.0.token" in r.stderr
    assert "connections.0.target.port" in r.stderr and f"{cfg}:7" in r.stderr
    assert "plain-secret-inline" not in r.stderr


def test_missing_env_secret_is_named(tmp_path: Path, pg_cluster) -> None:
    from wardgate.testing.gateway_process import write_config

    path, env = write_config(tmp_path, pg_cluster)
    env.pop("WG_TARGET_PASSWORD")
    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "WG_TARGET_PASSWORD"},
    )
    assert r.returncode == 2
    assert "WG_TARGET_PASSWORD is not set" in r.stderr
    assert pg_cluster.app_password not in r.stderr


def test_sigint_also_stops_cleanly(pg_cluster, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, pg_cluster)
    assert gw.proc.proc is not None
    gw.proc.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 20
    while gw.proc.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gw.proc.proc.returncode == 0


def test_sessions_left_open_by_a_killed_gateway_are_ended_at_next_start(
    pg_cluster, tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, pg_cluster)
    conn = psycopg.connect(gw.dsn(), autocommit=True)
    conn.execute("select 1")
    gw.proc.proc.kill()  # type: ignore[union-attr]
    gw.proc.proc.wait()  # type: ignore[union-attr]
    conn.close()
    from wardgate.testing.gateway_process import GatewayProcess

    again = GatewayProcess(gw.config, gw.env).start()
    again.stop()
    ends = _events(gw, "session_end")
    assert any("recorded at the next start" in e["meta"]["reason"] for e in ends)
