"""Run `wardgate serve` as a real subprocess (tests, demo, benchmarks).

Writes a configuration for a target cluster, starts the gateway, waits for its
`gateway_ready` line on stderr, and keeps everything it printed so tests can check that
no secret ever appears there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wardgate.testing.pgcluster import PgCluster, free_port

__all__ = ["GatewayProcess", "write_config", "AGENT_TOKENS"]

AGENT_TOKENS = {
    "ci-bot": "tok-ci-7f3a9c2e5b1d4f60",
    "alice": "tok-alice-reviewer-88d2e1",
    "bob": "tok-bob-reviewer-41c9aa",
    "old-bot": "tok-old-bot-disabled-19",
}


def write_config(
    directory: Path,
    cluster: PgCluster,
    *,
    listen_port: int | None = None,
    api_port: int | None = None,
    extra: dict[str, Any] | None = None,
    connection_extra: dict[str, Any] | None = None,
    target_tls: str = "prefer",
    extra_identities: list[dict[str, Any]] | None = None,
) -> tuple[Path, dict[str, str]]:
    """A config with identities ci-bot (group ci), alice and bob (reviewers), old-bot
    (disabled), then `extra_identities` (OIDC-backed ones, say)."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {f"WG_TOKEN_{k.upper().replace('-', '_')}": v for k, v in AGENT_TOKENS.items()}
    env["WG_TARGET_PASSWORD"] = cluster.app_password
    conn: dict[str, Any] = {
        "name": "orders",
        "protocol": "postgres",
        "listen": f"127.0.0.1:{listen_port or free_port()}",
        "target": {
            "host": "127.0.0.1",
            "port": cluster.port,
            "database": cluster.database,
            "user": cluster.app_user,
            "password": "env:WG_TARGET_PASSWORD",
            "tls": target_tls,
        },
    }
    conn.update(connection_extra or {})
    cfg: dict[str, Any] = {
        "store": f"sqlite:///{directory / 'audit.db'}",
        "identities": [
            {"name": "ci-bot", "token": "env:WG_TOKEN_CI_BOT", "groups": ["ci"]},
            {
                "name": "alice",
                "token": "env:WG_TOKEN_ALICE",
                "groups": ["dba"],
                "roles": ["agent", "reviewer"],
            },
            {
                "name": "bob",
                "token": "env:WG_TOKEN_BOB",
                "groups": ["dba"],
                "roles": ["agent", "reviewer"],
            },
            {"name": "old-bot", "token": "env:WG_TOKEN_OLD_BOT", "disabled": True},
            *(extra_identities or []),
        ],
        "connections": [conn],
        "checkpoints": {
            "interval": "1s",
            "key_file": str(directory / "checkpoint.key"),
            "publish": f"file:{directory / 'published-checkpoints.txt'}",
        },
        "approvals": {"poll_interval": "0.2s"},
    }
    if api_port:
        cfg["api"] = {"listen": f"127.0.0.1:{api_port}"}
    for key, value in (extra or {}).items():
        cfg[key] = value
    path = directory / "wardgate.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, env


@dataclass
class GatewayProcess:
    config: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    stderr_lines: list[str] = field(default_factory=list)
    ready: dict[str, Any] | None = None
    # limit on the size of any file the gateway writes (RLIMIT_FSIZE): a full disk, simulated
    max_file_size: int | None = None
    # (soft, hard) RLIMIT_NOFILE to start the gateway with (a service manager's default)
    open_files: tuple[int, int] | None = None

    def start(self, timeout: float = 30) -> GatewayProcess:
        env = {**os.environ, **self.env}
        limit = self.max_file_size
        nofile = self.open_files

        def preexec() -> None:
            import resource

            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wardgate", "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=preexec if limit is not None or nofile is not None else None,
        )
        got = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_lines.append(line)
                if '"gateway_ready"' in line:
                    try:
                        self.ready = json.loads(line)
                    except ValueError:
                        self.ready = {}
                    got.set()
            got.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not got.wait(0.1):
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("gateway did not start:\n" + "".join(self.stderr_lines))
        if self.ready is None:
            raise RuntimeError("gateway exited:\n" + "".join(self.stderr_lines))
        return self

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.05)
        return self.proc.returncode
