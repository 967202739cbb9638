"""`wardgate evidence export | verify`.

Theory of operation: `export` reads the configuration like the other audit commands
(`audit_commands._settings`), loads the keyring, signs a fresh checkpoint when events
arrived after the last one (so the whole selection is provable; `--no-checkpoint` skips
this and leaves newer events out), and writes the bundle. `verify` needs only the bundle
file and, to pin trust, `--key` files holding verifier keys (`name+keyid+base64`, as
`wardgate keys init|rotate` print them); without `--key` it trusts the keys inside the
bundle and says so.

Exit status: 0 ok, 1 verification failed / store unavailable / nothing to export,
2 bad configuration, keys or arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from wardgate.audit.checkpoint import Checkpointer, CheckpointError
from wardgate.audit.evidence import EvidenceError, export_bundle, load_pinned_keys, verify_bundle
from wardgate.audit.keys import KeyringError, load_keyring
from wardgate.audit.records import StoreUnavailable
from wardgate.audit.store import AuditStore, parse_store_url
from wardgate.cli import audit_commands
from wardgate.termtext import shown

__all__ = ["register"]

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The wardgate YAML configuration file.")
]
_VERDICTS = ("allow", "deny", "review")


def _fail(msg: str, code: int) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def register(app: typer.Typer) -> None:
    evidence = typer.Typer(help="Auditor evidence bundles.", no_args_is_help=True)
    app.add_typer(evidence, name="evidence")

    @evidence.command("export")
    def export_cmd(
        config: ConfigOpt,
        output: Annotated[Path, typer.Option("--output", "-o", help="Bundle file to write.")],
        identity: Annotated[str | None, typer.Option()] = None,
        connection: Annotated[str | None, typer.Option()] = None,
        session: Annotated[str | None, typer.Option()] = None,
        verdict: Annotated[str | None, typer.Option(help="allow|deny|review")] = None,
        kind: Annotated[str | None, typer.Option()] = None,
        since: Annotated[str | None, typer.Option(help="ISO-8601 time, inclusive")] = None,
        until: Annotated[str | None, typer.Option(help="ISO-8601 time, exclusive")] = None,
        checkpoint: Annotated[
            bool, typer.Option(help="Sign a fresh checkpoint first if events are unsigned.")
        ] = True,
    ) -> None:
        """Write the selected events with proofs, keys and a report to a zip bundle."""
        if verdict is not None and verdict not in _VERDICTS:
            raise _fail(f"--verdict must be one of {', '.join(_VERDICTS)}", 2)
        s = audit_commands._settings(config)
        try:
            ring = load_keyring(s.key_file)
        except KeyringError as exc:
            raise _fail(str(exc), 2) from exc
        if not parse_store_url(s.store).exists():
            raise _fail(f"audit store not found: {parse_store_url(s.store)}", 1)
        try:
            if checkpoint:
                store = AuditStore.open(s.store, durability=s.durability)
                try:
                    Checkpointer(store, ring, s.origin, publish=s.publish).checkpoint_now()
                finally:
                    store.close()
            store = AuditStore.open(s.store, read_only=True)
        except (StoreUnavailable, CheckpointError) as exc:
            raise _fail(str(exc), 1) from exc
        filters = {"identity": identity, "connection": connection, "session": session,
                   "verdict": verdict, "kind": kind, "since": since, "until": until}  # fmt: skip
        try:
            res = export_bundle(store, ring, s.origin, output, filters, published=s.publish)
        except EvidenceError as exc:
            raise _fail(str(exc), 1) from exc
        finally:
            store.close()
        typer.echo(
            f"wrote {res.path}: {res.events} events, {res.checkpoints} checkpoints "
            f"(tree size {res.tree_size}), {res.bytes} bytes"
        )
        if res.left_out_unsigned:
            typer.echo(
                f"note: {res.left_out_unsigned} matching events are newer than the last "
                "checkpoint and were left out"
            )

    @evidence.command("verify")
    def verify_cmd(
        bundle: Annotated[Path, typer.Argument(help="The bundle zip.")],
        key: Annotated[
            list[Path] | None,
            typer.Option("--key", help="Trusted verifier key file (repeatable)."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    ) -> None:
        """Verify a bundle offline (no store, no gateway); exit 1 on any failure."""
        try:
            pinned = load_pinned_keys(key) if key else None
        except (OSError, KeyringError) as exc:
            raise _fail(str(exc), 2) from exc
        try:
            rep = verify_bundle(bundle, pinned)
        except OSError as exc:
            raise _fail(f"cannot read {bundle}: {exc}", 2) from exc
        if as_json:
            typer.echo(json.dumps(rep.to_json(), indent=2))
        else:
            for line in rep.lines():  # a bundle is untrusted input: names shown, not obeyed
                typer.echo(shown(line))
        raise typer.Exit(0 if rep.ok else 1)
