"""A throw-away PostgreSQL cluster on a free port, for tests, the demo and benchmarks.

Uses the server binaries on this machine (Debian's /usr/lib/postgresql/*/bin, or
initdb on PATH). PostgreSQL refuses to run as root, so as root the cluster runs as the
`postgres` system user. Password authentication is SCRAM-SHA-256 on TCP, so the gateway's
login to the target is the real thing; TLS is on with a self-signed certificate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgCluster", "as_postgres_user", "find_pg_bin", "free_port", "make_self_signed"]


def as_postgres_user() -> dict:
    """subprocess keyword arguments that run a server binary as the `postgres` user when
    we are root (initdb and postgres refuse to run as root); nothing otherwise."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")

    def demote() -> None:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return {"preexec_fn": demote}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_pg_bin() -> Path | None:
    """The machine's PostgreSQL server binaries, else those the `pgserver` wheel ships."""
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists():
            return base
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    try:
        import pgserver  # the demo extra: PostgreSQL in a wheel
    except ImportError:
        return None
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return bundled if (bundled / "initdb").exists() else None


def make_self_signed(directory: Path, cn: str = "localhost") -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(cn), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class PgCluster:
    directory: Path
    port: int
    bin: Path
    app_user: str = "app"
    app_password: str = "app-secret-Zx81"
    database: str = "orders"
    _started: bool = False

    @classmethod
    def create(cls, *, database: str = "orders", app_password: str | None = None) -> PgCluster:
        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        directory = Path(tempfile.mkdtemp(prefix="wardgate-pg-"))
        cluster = cls(directory, free_port(), pg_bin, database=database)
        if app_password:
            cluster.app_password = app_password
        cluster._init()
        return cluster

    # ------------------------------------------------------------------ internals

    def _as_owner(self) -> dict:
        return as_postgres_user()

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, cwd="/", **self._as_owner())

    def _init(self) -> None:
        data = self.directory / "data"
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.directory, pw.pw_uid, pw.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        cert, key = make_self_signed(self.directory)
        for f in (cert, key):
            shutil.copy(f, data / f.name)
        sock = self.directory / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (data / "server.crt", data / "server.key", sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        conf = data / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{sock}'\nssl = on\n"
                "password_encryption = 'scram-sha-256'\nmax_connections = 600\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "shared_buffers = 128MB\nlog_min_messages = warning\n"
                "log_statement = 'none'\nlogging_collector = off\n"
            )
        hba = data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        self.start()
        self.psql("postgres", f"CREATE ROLE {self.app_user} LOGIN PASSWORD '{self.app_password}'")
        self.psql("postgres", f"CREATE DATABASE {self.database} OWNER {self.app_user}")

    @property
    def socket_dir(self) -> Path:
        return self.directory / "sock"

    def start(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._started = True

    def stop(self) -> None:
        if self._started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.directory / "data"),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                )
            self._started = False

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def psql(self, database: str, sql: str, *, user: str = "postgres") -> str:
        """Run SQL as the superuser over the socket (for set-up and for checks on the target)."""
        out = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not start")
