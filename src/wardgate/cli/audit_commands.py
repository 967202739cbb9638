"""`wardgate verify | keys init | keys rotate | events | retention apply`.

Theory of operation: each command reads the configuration with `_settings` (the only
place that knows the config model), then calls the audit package's functions: the
commands are thin. `verify` opens the store read-only and exits 1 on any failure;
`events` streams matching events (a table, or JSON lines with --json); `retention apply`
appends a retention_purge event and purges payloads older than the window.

Exit status: 0 ok, 1 verification failed / store unavailable, 2 bad configuration or keys.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from wardgate.audit.keys import KeyringError, init_keyring, load_keyring, rotate_keyring
from wardgate.audit.records import StoreUnavailable
from wardgate.audit.retention import apply_retention
from wardgate.audit.store import AuditStore, parse_store_url
from wardgate.audit.verify import verify_store
from wardgate.termtext import json_line, shown

__all__ = ["register", "AuditSettings"]

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The wardgate YAML configuration file.")
]


@dataclass(frozen=True, slots=True)
class AuditSettings:
    store: str
    durability: str
    origin: str
    key_file: Path
    publish: Path | None


def _settings(config: Path) -> AuditSettings:
    """Read the audit part of the configuration (the one place that knows the model)."""
    from wardgate.config import load_config

    try:
        cfg = load_config(config)
    except Exception as exc:  # noqa: BLE001 - any config problem is exit 2
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    cp = cfg.checkpoints
    return AuditSettings(
        cfg.store,
        cfg.audit.durability,
        cp.origin,
        Path(cp.key_file),
        cp.publish and Path(cp.publish),
    )


def _fail(msg: str, code: int) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Checkpoint signing keys.", no_args_is_help=True)
    retention = typer.Typer(help="Payload retention.", no_args_is_help=True)
    app.add_typer(keys, name="keys")
    app.add_typer(retention, name="retention")

    @app.command("verify")
    def verify_cmd(
        config: ConfigOpt,
        published: Annotated[
            Path | None,
            typer.Option(
                help="Published checkpoints file, or an evidence bundle received earlier, "
                "to compare with."
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    ) -> None:
        """Recompute every event, payload, the tree and every checkpoint; exit 1 on failure."""
        s = _settings(config)
        try:
            ring_keys = load_keyring(s.key_file).public_keys()
        except KeyringError as exc:
            raise _fail(str(exc), 2) from exc
        path = parse_store_url(s.store)
        if not path.exists():
            raise _fail(f"audit store not found: {path}", 1)
        rep = verify_store(path, ring_keys, published=published or s.publish)
        if as_json:
            typer.echo(json.dumps(rep.to_json(), indent=2))
        else:
            for line in rep.lines():
                typer.echo(shown(line))
        raise typer.Exit(0 if rep.ok else 1)

    @keys.command("init")
    def keys_init(
        config: ConfigOpt,
        force: Annotated[bool, typer.Option(help="Overwrite an existing key file.")] = False,
    ) -> None:
        """Create the Ed25519 checkpoint key file (mode 0600)."""
        s = _settings(config)
        try:
            ring = init_keyring(s.key_file, s.origin, force=force)
        except KeyringError as exc:
            raise _fail(str(exc), 2) from exc
        typer.echo(f"key file {s.key_file}\nverifier key {ring.active.vkey()}")

    @keys.command("show")
    def keys_show(config: ConfigOpt) -> None:
        """Print the verifier keys (public), one per line, for auditors to pin with --key."""
        from wardgate.audit.keys import load_keyring

        s = _settings(config)
        try:
            ring = load_keyring(s.key_file)
        except KeyringError as exc:
            raise _fail(str(exc), 2) from exc
        for key in ring.public_keys():
            until = key.not_after or "now (active)"
            typer.echo(f"{key.vkey()}  # from {key.not_before} until {until}")

    @keys.command("rotate")
    def keys_rotate(config: ConfigOpt) -> None:
        """Start a new signing key; keep old public keys with their validity periods."""
        s = _settings(config)
        try:
            ring = rotate_keyring(s.key_file)
        except KeyringError as exc:
            raise _fail(str(exc), 2) from exc
        typer.echo(f"new verifier key {ring.active.vkey()}")
        for k in ring.retired:
            typer.echo(f"retired {k.vkey()} ({k.not_before} .. {k.not_after})")

    @app.command("events")
    def events_cmd(
        config: ConfigOpt,
        identity: Annotated[str | None, typer.Option()] = None,
        connection: Annotated[str | None, typer.Option()] = None,
        session: Annotated[str | None, typer.Option()] = None,
        verdict: Annotated[str | None, typer.Option(help="allow|deny|review")] = None,
        kind: Annotated[str | None, typer.Option()] = None,
        since: Annotated[str | None, typer.Option(help="ISO-8601 time, inclusive")] = None,
        until: Annotated[str | None, typer.Option(help="ISO-8601 time, exclusive")] = None,
        limit: Annotated[int | None, typer.Option()] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Query the audit log."""
        s = _settings(config)
        try:
            store = AuditStore.open(s.store, read_only=True)
        except StoreUnavailable as exc:
            raise _fail(str(exc), 1) from exc
        try:
            for e in store.events(identity=identity, connection=connection, session=session,
                                  verdict=verdict, kind=kind, since=since, until=until,
                                  limit=limit):  # fmt: skip
                if as_json:
                    sys.stdout.write(json_line(e.fields()) + "\n")
                else:
                    # an auth_failure's identity is what the client claimed: shown, not obeyed
                    typer.echo(
                        f"{e.seq:>8} {shown(e.time)} {shown(e.kind):<18} "
                        f"{shown(e.identity or '-'):<16} {shown(e.connection or '-'):<12} "
                        f"{shown(e.verdict or '-'):<6} {shown(e.rule or '')}"
                    )
        finally:
            store.close()

    @retention.command("apply")
    def retention_apply(
        config: ConfigOpt,
        older_than: Annotated[str, typer.Option("--older-than", help="e.g. 90d, 12h")],
    ) -> None:
        """Purge payloads older than the window; events and hashes stay, the purge is logged."""
        s = _settings(config)
        try:
            store = AuditStore.open(s.store, durability=s.durability)
        except StoreUnavailable as exc:
            raise _fail(str(exc), 1) from exc
        try:
            res = apply_retention(store, older_than)
        except ValueError as exc:
            raise _fail(str(exc), 2) from exc
        except StoreUnavailable as exc:
            raise _fail(str(exc), 1) from exc
        finally:
            store.close()
        typer.echo(
            f"purged {res.payloads_purged} payloads older than {res.cutoff} "
            f"(recorded as event {res.event_seq})"
        )
