"""The three paths under test, started by the benchmark itself.

Theory of operation
-------------------
`Rig.start()` creates one throw-away PostgreSQL cluster (`PgCluster`: fsync off, the
same settings for every path), a PgBouncer in session mode in front of it, and wardgate
gateways (`GatewayProcess`, the default baseline policy with masking and recording on),
one per audit durability. Each path is a `Target`: host, port, user, password and
database, turned into libpq environment variables for pgbench and a DSN for psycopg.

Every path talks plaintext TCP on 127.0.0.1 (the agent side and the target side), so
the comparison is between proxies and not between TLS stacks: pgbench uses
sslmode=disable, PgBouncer server_tls_sslmode=disable, wardgate target tls: disable.

PgBouncer runs as the `postgres` user when we are root, with its own ini and userlist
in a temporary directory; it authenticates to the cluster with the app user's password
over SCRAM-SHA-256 and asks its clients for SCRAM too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from wardgate.testing.gateway_process import AGENT_TOKENS, GatewayProcess, write_config
from wardgate.testing.pgcluster import PgCluster, as_postgres_user, free_port

__all__ = ["Target", "Rig", "ensure_pgbouncer", "pid_rss_kb", "cpu_seconds", "tree_cpu_seconds"]


@dataclass
class Target:
    name: str  # direct | pgbouncer | wardgate | wardgate-normal
    host: str
    port: int
    user: str
    password: str
    database: str
    pid: int | None = None  # the proxy process (for RSS), None for direct

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.database,
            "PGSSLMODE": "disable",
            "PGAPPNAME": "bench",
        }

    def dsn(self) -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} password={self.password} "
            f"dbname={self.database} sslmode=disable"
        )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of one live process (0 if there is none or it is gone)."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int | None) -> float | None:
    """`cpu_seconds` of a process and its live children (the gateway's audit writer
    process and workers count as the gateway's); None if the process is gone."""
    if not pid:
        return None
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return None
    return cpu_seconds(pid) + sum(cpu_seconds(c.pid) for c in children)


def pid_rss_kb(pid: int) -> int:
    """Resident set size of a process and its live children, in KiB (0 if it is gone):
    the gateway's audit writer process counts as part of the gateway."""
    total = _own_rss_kb(pid)
    try:
        for child in psutil.Process(pid).children(recursive=True):
            total += _own_rss_kb(child.pid)
    except psutil.Error:
        pass
    return total


def _own_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def ensure_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "pgbouncer"],
            check=True,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if Path(found).exists():
            return found
    raise RuntimeError("pgbouncer is missing: apt-get install -y pgbouncer")


@dataclass
class Rig:
    cluster: PgCluster | None = None
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wardgate-bench-")))
    targets: dict[str, Target] = field(default_factory=dict)
    gateways: dict[str, GatewayProcess] = field(default_factory=dict)
    bouncer: subprocess.Popen | None = None
    pgbouncer_version: str = ""

    # ------------------------------------------------------------------ start / stop

    def start(self, durabilities: tuple[str, ...] = ("full", "normal")) -> Rig:
        self.cluster = PgCluster.create(database="orders")
        c = self.cluster
        c.psql("postgres", "ALTER SYSTEM SET max_connections = 700")
        c.stop()
        c.start()
        self.targets["direct"] = Target(
            "direct", "127.0.0.1", c.port, c.app_user, c.app_password, c.database
        )
        self._start_pgbouncer()
        for durability in durabilities:
            self.start_gateway(durability)
        return self

    def start_gateway(self, durability: str, name: str | None = None, **extra: object) -> Target:
        assert self.cluster is not None
        name = name or ("wardgate" if durability == "full" else f"wardgate-{durability}")
        directory = self.work / name
        cfg, env = write_config(
            directory,
            self.cluster,
            target_tls="disable",
            extra={"audit": {"durability": durability}, **extra},
        )
        gw = GatewayProcess(cfg, env).start()
        self.gateways[name] = gw
        port = _listen_port(cfg)
        assert gw.proc is not None
        t = Target(
            name,
            "127.0.0.1",
            port,
            "ci-bot",
            AGENT_TOKENS["ci-bot"],
            self.cluster.database,
            pid=gw.proc.pid,
        )
        self.targets[name] = t
        return t

    def stop_gateway(self, name: str) -> None:
        gw = self.gateways.pop(name, None)
        if gw is not None:
            gw.stop()
        self.targets.pop(name, None)

    def _start_pgbouncer(self) -> None:
        assert self.cluster is not None
        c = self.cluster
        exe = ensure_pgbouncer()
        out = subprocess.run([exe, "--version"], capture_output=True, text=True)
        self.pgbouncer_version = (out.stdout.splitlines() or ["?"])[0]
        d = self.work / "pgbouncer"
        d.mkdir()
        port = free_port()
        (d / "userlist.txt").write_text(f'"{c.app_user}" "{c.app_password}"\n')
        (d / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{c.database} = host=127.0.0.1 port={c.port} dbname={c.database}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
            f"unix_socket_dir = {d}\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {d / 'userlist.txt'}\n"
            "pool_mode = session\n"
            "max_client_conn = 1000\ndefault_pool_size = 600\nmax_db_connections = 0\n"
            "server_tls_sslmode = disable\n"
            f"logfile = {d / 'pgbouncer.log'}\n"
            "log_connections = 0\nlog_disconnections = 0\nlog_pooler_errors = 1\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.work, pw.pw_uid, pw.pw_gid)
            for p in (d, d / "userlist.txt", d / "pgbouncer.ini"):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.bouncer = subprocess.Popen(
            [exe, str(d / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            **as_postgres_user(),
        )
        deadline = time.monotonic() + 15
        import socket

        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("pgbouncer did not start")
        self.targets["pgbouncer"] = Target(
            "pgbouncer",
            "127.0.0.1",
            port,
            c.app_user,
            c.app_password,
            c.database,
            pid=self.bouncer.pid,
        )

    def stop(self) -> None:
        for name in list(self.gateways):
            self.stop_gateway(name)
        if self.bouncer is not None and self.bouncer.poll() is None:
            self.bouncer.terminate()
            try:
                self.bouncer.wait(10)
            except subprocess.TimeoutExpired:
                self.bouncer.kill()
        if self.cluster is not None:
            self.cluster.destroy()
        shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ helpers

    def psql_app(self, sql: str) -> str:
        """SQL as the app user straight on the cluster (set-up that the gateway would deny)."""
        t = self.targets["direct"]
        out = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env=t.env(),
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def versions(self) -> dict[str, str]:
        assert self.cluster is not None
        pg = self.cluster.psql("postgres", "SHOW server_version")
        pgbench = subprocess.run(["pgbench", "--version"], capture_output=True, text=True)
        return {
            "postgresql": pg,
            "pgbouncer": self.pgbouncer_version,
            "pgbench": pgbench.stdout.strip(),
        }


def _listen_port(cfg: Path) -> int:
    import yaml

    data = yaml.safe_load(cfg.read_text())
    return int(data["connections"][0]["listen"].rsplit(":", 1)[1])
