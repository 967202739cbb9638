"""`wardgate config check`: what `wardgate serve` would need, checked before deploying.

Theory of operation: each check builds the same object the gateway builds at start
(the validated config with its secrets resolved, the policy engine, the masking engine,
the identity registry, the checkpoint keyring, the store, a socket on each listener)
and reports ok, warn or FAIL with a one-line detail that names things, never a secret.
`--connect` also logs in to every target with the connection's own credential, as a
session would, and reports the server version or the target's refusal, and fetches every
OIDC provider's key set as the gateway does at start.

Exit status: 0 no failure (warnings allowed), 1 a check failed, 2 the configuration
itself does not load (file, line and key are printed, as for `serve`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from wardgate.config import Config, ConfigError, ConnectionConfig, load_config
from wardgate.termtext import shown

__all__ = ["register", "run_checks"]

OK, WARN, FAIL = "ok", "warn", "FAIL"

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The wardgate YAML configuration file.")
]

Result = tuple[str, str, str]  # (check, status, detail)


def _guard(name: str, fn: Callable[[], tuple[str, str]]) -> Result:
    try:
        status, detail = fn()
    except Exception as exc:  # noqa: BLE001 - every failure becomes a FAIL line
        return name, FAIL, f"{type(exc).__name__}: {exc}"
    return name, status, detail


def _policies(cfg: Config) -> tuple[str, str]:
    from wardgate.policy.engine import PolicyEngine

    PolicyEngine(
        list(cfg.policies),
        connection_policies={c.name: list(c.policies) for c in cfg.connections},
        on_unparsed={c.name: c.on_unparsed for c in cfg.connections},
    )
    names = sorted({p for c in cfg.connections for p in c.policies} | {"baseline"})
    return OK, f"{len(cfg.policies)} defined; in use: {', '.join(names)}"


def _masking(cfg: Config) -> tuple[str, str]:
    from wardgate.masking.engine import MaskingConfig, MaskingEngine

    masking_cfg = cfg.masking or MaskingConfig()
    ref = getattr(masking_cfg, "token_key", None)
    token_key = None
    if ref:
        from wardgate.secrets import SecretRef

        token_key = SecretRef(ref).resolve().encode()
    MaskingEngine(masking_cfg, token_key=token_key)
    from wardgate.masking import fastscan

    scanner = f"compiled (hyperscan {fastscan.version()})" if fastscan.AVAILABLE else "pure Python"
    return OK, f"scanner {scanner}; token key {'set' if token_key else 'not set'}"


def _identities(cfg: Config) -> tuple[str, str]:
    from wardgate.identity.registry import IdentityRegistry

    IdentityRegistry.from_config(cfg)
    active = [i.name for i in cfg.identities if not i.disabled]
    oidc = sum(1 for i in cfg.identities if i.oidc is not None)
    return OK, (
        f"{len(active)} active, {len(cfg.identities) - len(active)} disabled"
        + (f"; {oidc} OIDC-backed" if oidc else "")
    )


def _oidc(cfg: Config) -> tuple[str, str]:
    """The OIDC providers and which identities use them (nothing fetched)."""
    if not cfg.oidc_providers:
        return OK, "none configured"
    parts = []
    for p in cfg.oidc_providers:
        users = [i.name for i in cfg.identities if i.oidc and i.oidc.provider == p.name]
        keys = p.jwks or "discovery"
        parts.append(
            f"{p.name} ({p.issuer}, keys: {keys}, {', '.join(p.algorithms)}; "
            f"{len(users)} identit{'y' if len(users) == 1 else 'ies'})"
        )
    plaintext = [c.name for c in cfg.connections if c.allow_oidc_without_tls_on_loopback]
    notls = [c.name for c in cfg.connections if c.tls is None]
    users = [i for i in cfg.identities if i.oidc is not None]
    if users and notls and len(notls) == len(cfg.connections) and not plaintext:
        return WARN, (
            "; ".join(parts) + ": no connection has tls:, and OIDC tokens are only accepted "
            "over TLS"
        )
    if plaintext:
        return WARN, "; ".join(parts) + f"; OIDC without TLS allowed on loopback: {plaintext}"
    return OK, "; ".join(parts)


def _oidc_keys(provider) -> tuple[str, str]:
    """Fetch a provider's key set as the gateway does at start."""
    from wardgate.identity.oidc import ProviderKeys

    async def fetch() -> tuple[str, str]:
        keys = ProviderKeys(provider, lambda *_a, **_k: None)
        if not await keys.refresh(why="config check"):
            return FAIL, f"keys cannot be fetched from {keys.source}: {keys.error}"
        kids = ", ".join(k or "(no kid)" for k in sorted(keys.keys))
        return OK, f"{len(keys.keys)} key(s) from {keys.source}: {kids}"

    return asyncio.run(fetch())


def _key_file(cfg: Config) -> tuple[str, str]:
    from wardgate.audit.keys import load_keyring

    path = cfg.checkpoints.key_file
    if not path.exists():
        parent = path.parent if path.parent.exists() else path.parent.parent
        if not os.access(parent, os.W_OK):
            return FAIL, f"{path} is missing and {parent} is not writable"
        return WARN, f"{path} is missing: a key is made at first start (or `keys init`)"
    ring = load_keyring(path)  # refuses a file readable by others
    return OK, f"{path}: key {ring.active.key_id.hex()}, {len(ring.retired)} retired"


def _store(cfg: Config) -> tuple[str, str]:
    from wardgate.audit.store import parse_store_url

    path = parse_store_url(cfg.store)
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if not os.access(parent, os.W_OK):
            return FAIL, f"{path} does not exist and {parent} is not writable"
        return WARN, f"{path} does not exist yet: it is created at first start"
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        return FAIL, f"{path}: the gateway needs write access to the file and its directory"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (top,) = conn.execute("SELECT max(seq) FROM events").fetchone()
    finally:
        conn.close()
    return OK, f"{path}: {0 if top is None else top + 1} events"


def _publish(cfg: Config) -> tuple[str, str]:
    target = cfg.checkpoints.publish
    if target is None:
        return WARN, "checkpoints.publish is not set: nobody outside the store holds checkpoints"
    path = Path(target)
    parent = next((p for p in path.parents if p.exists()), Path("/"))
    if path.exists() and not os.access(path, os.W_OK):
        return FAIL, f"{path} is not writable"
    if not path.exists() and not os.access(parent, os.W_OK):
        return FAIL, f"{path} cannot be created ({parent} is not writable)"
    return OK, str(path)


def _listener(host: str, port: int) -> tuple[str, str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return WARN, f"{host}:{port} is in use (is wardgate already running?)"
            return FAIL, f"{host}:{port}: {exc.strerror}"
    return OK, f"{host}:{port} free"


def _auth_limit(c: ConnectionConfig, cfg: Config) -> tuple[str, str]:
    lim = c.auth_failure_limit
    if lim is None:
        return WARN, (
            "auth_failure_limit: null: every failed login is recorded, as fast as a client "
            "can try (it can fill the audit store and guess tokens)"
        )
    per = f"per worker process ({cfg.workers} workers)" if cfg.workers > 1 else "per process"
    return OK, (
        f"{lim.failures} failed logins in {_secs(lim.window)} from one address block it "
        f"for {_secs(lim.block)}, {per}"
    )


def _secs(value: float) -> str:
    return f"{value:g}s"


def _api_listener(host: str, port: int) -> tuple[str, str]:
    """The API speaks plain HTTP: off loopback, reviewers' bearer tokens (which may also
    log agents in) cross the network in clear."""
    status, detail = _listener(host, port)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if status == OK and not loopback:
        return WARN, (
            f"{detail}; the API has no TLS: bearer tokens cross the network in clear "
            "(listen on 127.0.0.1 behind a TLS proxy)"
        )
    return status, detail


def _connect(conn) -> tuple[str, str]:
    from wardgate.engines.postgres import handshake as hs

    async def login() -> tuple[str, str]:
        try:
            session = await hs.connect_target(conn, {"application_name": "wardgate-check"})
        except hs.HandshakeError as exc:
            return FAIL, f"{exc} (SQLSTATE {exc.sqlstate})"
        params = dict(session.parameters)
        session.writer.close()
        tls = "TLS" if session.tls else "no TLS"
        return (
            OK,
            f"logged in as {conn.target.user}: PostgreSQL {params.get('server_version', '?')}, {tls}",
        )

    return asyncio.run(login())


def _processes(cfg: Config) -> tuple[str, str]:
    """The process layout `serve` will start (audit.writer, workers)."""
    if cfg.workers > 1:
        zero = [c.name for c in cfg.connections if c.listen[1] == 0]
        if zero:
            return FAIL, f"workers: {cfg.workers} needs fixed listen ports; port 0 on {zero}"
        if cfg.workers > (os.cpu_count() or 1):
            return WARN, f"{cfg.workers} workers on {os.cpu_count()} cores"
        return OK, f"{cfg.workers} gateway workers on shared ports, one audit writer process"
    if cfg.audit.writer == "thread":
        return OK, "one process; the audit writer is a thread of it (audit.writer: thread)"
    return OK, "one gateway process and its audit writer process"


def run_checks(cfg: Config, *, connect: bool) -> list[Result]:
    results = [
        _guard("processes", lambda: _processes(cfg)),
        _guard("policies", lambda: _policies(cfg)),
        _guard("masking", lambda: _masking(cfg)),
        _guard("identities", lambda: _identities(cfg)),
        _guard("oidc providers", lambda: _oidc(cfg)),
        _guard("checkpoint key", lambda: _key_file(cfg)),
        _guard("publish", lambda: _publish(cfg)),
        _guard("audit store", lambda: _store(cfg)),
    ]
    for c in cfg.connections:
        results.append(_guard(f"listener {c.name}", lambda c=c: _listener(*c.listen)))
        results.append(_guard(f"failed logins {c.name}", lambda c=c: _auth_limit(c, cfg)))
        if connect:
            results.append(_guard(f"target {c.name}", lambda c=c: _connect(c)))
    if connect:
        for p in cfg.oidc_providers:
            results.append(_guard(f"oidc {p.name}", lambda p=p: _oidc_keys(p)))
    if cfg.api.listen is not None:
        results.append(_guard("api listener", lambda: _api_listener(*cfg.api.listen)))
    return results


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(
        help="Check a configuration before deploying it.", no_args_is_help=True
    )
    app.add_typer(config_app, name="config")

    @config_app.command("check")
    def check(
        config: ConfigOpt,
        connect: Annotated[
            bool, typer.Option("--connect", help="Also log in to every target and fetch OIDC keys.")
        ] = False,
    ) -> None:
        """Check everything `serve` needs: secrets, policies, masking, keys, store, ports."""
        console = Console()
        try:
            cfg = load_config(config, check_secrets=True)
        except ConfigError as exc:
            Console(stderr=True).print(
                f"wardgate: configuration error\n{exc}", highlight=False, markup=False
            )
            raise typer.Exit(2) from None
        results = [("configuration", OK, f"{config}: {len(cfg.connections)} connection(s)")]
        results += run_checks(cfg, connect=connect)
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
        for col in ("check", "status", "detail"):
            table.add_column(col)
        colors = {OK: "green", WARN: "yellow", FAIL: "red"}
        for name, status, detail in results:
            # a detail can quote a target's error text or a provider's key ids: plain text,
            # control characters shown as escapes
            table.add_row(name, f"[{colors[status]}]{status}[/]", Text(shown(detail)))
        console.print(table, highlight=False)
        failed = [r for r in results if r[1] == FAIL]
        if failed:
            console.print(f"[red]{len(failed)} check(s) failed[/]")
            raise typer.Exit(1)
