"""`wardgate config check` against a real PostgreSQL target and real files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from wardgate.testing.gateway_process import write_config
from wardgate.testing.pgcluster import PgCluster


def _check(cfg: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wardgate", "config", "check", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env, "COLUMNS": "200"},
    )  # fmt: skip


def test_a_good_config_passes_and_logs_in(pg_cluster: PgCluster, tmp_path: Path) -> None:
    cfg, env = write_config(tmp_path, pg_cluster)
    r = _check(cfg, env, "--connect")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "target orders" in r.stdout and "logged in as app" in r.stdout
    assert "FAIL" not in r.stdout
    assert env["WG_TARGET_PASSWORD"] not in r.stdout + r.stderr
    assert all(token not in r.stdout for token in env.values())


def test_wrong_target_password_fails_without_printing_it(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    cfg, env = write_config(tmp_path, pg_cluster)
    env["WG_TARGET_PASSWORD"] = "not-the-password-1234"
    r = _check(cfg, env, "--connect")
    assert r.returncode == 1
    assert "target orders" in r.stdout and "FAIL" in r.stdout and "28P01" in r.stdout
    assert "not-the-password-1234" not in r.stdout + r.stderr


def test_bad_files_and_ports_are_named(pg_cluster: PgCluster, tmp_path: Path) -> None:
    cfg, env = write_config(tmp_path, pg_cluster)
    key = tmp_path / "checkpoint.key"
    r = _check(cfg, env)
    assert r.returncode == 0 and "is missing: a key is made" in r.stdout
    subprocess.run(
        [sys.executable, "-m", "wardgate", "keys", "init", "--config", str(cfg)],
        capture_output=True, env={**os.environ, **env}, check=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o644)  # readable by others: serve would refuse it
    listen = yaml.safe_load(cfg.read_text())["connections"][0]["listen"]
    host, port = listen.rsplit(":", 1)
    with socket.create_server((host, int(port))):  # someone holds the listener's port
        r = _check(cfg, env)
    assert r.returncode == 1
    assert "checkpoint key" in r.stdout and "chmod 600" in r.stdout
    assert "is in use" in r.stdout


def test_a_config_that_does_not_load_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text("connections: []\n")
    r = _check(cfg, {})
    assert r.returncode == 2 and "configuration error" in r.stderr


def test_workers_need_fixed_ports(pg_cluster: PgCluster, tmp_path: Path) -> None:
    cfg, env = write_config(tmp_path, pg_cluster, extra={"workers": 2})
    r = _check(cfg, env)
    assert r.returncode == 0 and "2 gateway workers" in r.stdout, r.stdout
    data = yaml.safe_load(cfg.read_text())
    data["connections"][0]["listen"] = "127.0.0.1:0"
    cfg.write_text(yaml.safe_dump(data))
    r = _check(cfg, env)
    assert r.returncode == 1 and "needs fixed listen ports" in r.stdout, r.stdout


def test_an_api_off_loopback_is_a_warning(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """The API is plain HTTP: listening beyond loopback sends reviewers' tokens in clear."""
    from wardgate.testing.pgcluster import free_port

    def api_line(cfg: Path, env: dict[str, str]) -> str:
        r = _check(cfg, env)
        assert r.returncode == 0, r.stdout + r.stderr
        return " ".join(r.stdout.split()).split("api listener", 1)[1]

    cfg, env = write_config(
        tmp_path, pg_cluster, extra={"api": {"listen": f"0.0.0.0:{free_port()}"}}
    )
    line = api_line(cfg, env)
    assert line.startswith(" warn") and "the API has no TLS" in line, line
    cfg, env = write_config(tmp_path, pg_cluster, api_port=free_port())  # 127.0.0.1
    assert api_line(cfg, env).startswith(" ok"), api_line(cfg, env)
