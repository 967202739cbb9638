"""The `wardgate` command.

Each area registers its own sub-commands (`register(app)` in `cli/*_commands.py`); this
module holds `serve`, `sessions`, `replay` and `demo`, and maps a bad configuration to
a clear message and exit status 2.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from wardgate.config import Config, ConfigError, load_config
from wardgate.termtext import json_line, shown

__all__ = ["app", "open_config"]

app = typer.Typer(
    name="wardgate",
    help="Identity-aware gateway: records, masks, holds and blocks what agents run, with verifiable evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The wardgate YAML configuration file.")
]


def open_config(path: Path, *, check_secrets: bool = False) -> Config:
    try:
        return load_config(path, check_secrets=check_secrets)
    except ConfigError as exc:
        sys.stderr.write(f"wardgate: configuration error\n{exc}\n")
        raise typer.Exit(2) from None


def _open_store(cfg: Config):
    from wardgate.audit.store import AuditStore

    return AuditStore.open(cfg.store, durability=cfg.audit.durability)


def raise_open_files_limit() -> None:
    """Every agent connection is two descriptors (agent, target), and connections that
    never finish set-up hold theirs until SETUP_TIMEOUT: a soft limit of 1024 (the usual
    default of a service manager) would refuse new sessions after ~500 of them. The soft
    limit goes up to the hard one, as Go's runtime and most servers do; the workers and
    the audit writer inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):  # a platform that will not: keep the soft limit
            pass


@app.command()
def serve(
    config: ConfigOpt,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="Gateway processes sharing the listen ports and one audit writer "
            "(default: `workers` in the config, 1).",
        ),
    ] = None,
) -> None:
    """Run the gateway: one listener per connection, until SIGTERM or SIGINT."""
    cfg = open_config(config, check_secrets=True)
    raise_open_files_limit()
    n = workers if workers is not None else cfg.workers
    if n > 1:
        from wardgate.workers import run_supervisor

        try:
            code = run_supervisor(cfg, config, n)
        except OSError as exc:
            err.print(f"wardgate: cannot start: {exc}", highlight=False, markup=False)
            raise typer.Exit(1) from None
        raise typer.Exit(code)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    from wardgate.server import serve as run_serve

    try:
        code = runner(run_serve(cfg))
    except ConfigError as exc:
        sys.stderr.write(f"wardgate: configuration error\n{exc}\n")
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"wardgate: cannot start: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _iso(ts: str | None) -> str:
    return ts or ""


@app.command()
def sessions(
    config: ConfigOpt,
    identity: Annotated[str | None, typer.Option(help="Only this identity.")] = None,
    connection: Annotated[str | None, typer.Option(help="Only this connection.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only sessions started at or after this ISO time.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List recorded sessions."""
    cfg = open_config(config)
    store = _open_store(cfg)
    try:
        rows = store.sessions(
            identity=identity, connection=connection, since=_normalize_time(since)
        )
    finally:
        store.close()
    if as_json:
        for s in rows:
            sys.stdout.write(json.dumps(_session_dict(s), default=str) + "\n")
        return
    table = Table(title="wardgate sessions")
    for col in (
        "session",
        "identity",
        "connection",
        "client",
        "application",
        "start",
        "end",
        "statements",
        "status",
    ):
        table.add_column(col)
    for s in rows:
        d = _session_dict(s)
        # application names and end reasons come from clients: shown, never obeyed or
        # read as rich markup
        cells = (
            d["id"],
            d["identity"] or "",
            d["connection"] or "",
            d.get("client_addr") or "",
            d.get("application_name") or "",
            _iso(d.get("start")),
            _iso(d.get("end")),
            str(d.get("statements", 0)),
            d.get("status") or "",
        )
        table.add_row(*(Text(shown(c)) for c in cells))
    console.print(table)


def _session_dict(s) -> dict:
    """The store's SessionSummary in the documented shape of `sessions --json`."""
    if s.ended is None:
        status = "open"
    elif s.end_reason in ("agent terminated", "agent disconnected"):
        status = "ended"
    else:
        status = f"ended: {s.end_reason}" if s.end_reason else "ended"
    return {
        "id": s.session,
        "identity": s.identity,
        "connection": s.connection,
        "client_addr": s.client_addr,
        "application_name": s.application_name,
        "start": s.started,
        "end": s.ended,
        "statements": s.statements,
        "allowed": s.allowed,
        "denied": s.denied,
        "reviewed": s.reviewed,
        "status": status,
        "end_reason": s.end_reason,
    }


def _normalize_time(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        err.print(f"wardgate: --since/--until: not an ISO time: {value!r}")
        raise typer.Exit(2) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@app.command()
def replay(
    session_id: Annotated[str, typer.Argument(help="The session id (a unique prefix is enough).")],
    config: ConfigOpt,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event.")] = False,
    max_rows: Annotated[int, typer.Option(help="Rows shown per statement.")] = 20,
) -> None:
    """Show one session as a timeline: statements, parameters, outcomes and rows."""
    from wardgate.replay import load_timeline, render_timeline

    cfg = open_config(config)
    store = _open_store(cfg)
    try:
        # the store stays open while the timeline streams out of it
        timeline = load_timeline(store, session_id, max_rows=None if as_json else max_rows)
        if timeline is None:
            err.print(
                f"wardgate: no session matches {shown(session_id)!r}", markup=False, highlight=False
            )
            raise typer.Exit(1)
        if as_json:
            for item in timeline.items:
                sys.stdout.write(json_line(item, default=str) + "\n")
            return
        render_timeline(console, timeline, max_rows=max_rows)
    finally:
        store.close()


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the demo's data directory.")] = False,
) -> None:
    """Run the guided demo: embedded PostgreSQL, the gateway and a scripted agent."""
    from wardgate.demo.run import run_demo

    raise typer.Exit(run_demo(keep=keep))


def _register_optional() -> None:
    for name in (
        "policy_commands",
        "approval_commands",
        "audit_commands",
        "masking_commands",
        "evidence_commands",
        "config_commands",
    ):
        try:
            module = importlib.import_module(f"wardgate.cli.{name}")
        except ImportError as exc:
            if exc.name and exc.name.startswith(f"wardgate.cli.{name}"):
                continue
            raise
        module.register(app)


_register_optional()


def main() -> None:  # pragma: no cover
    app()
