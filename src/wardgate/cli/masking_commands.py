"""`wardgate masking report`: what was masked, per connection and column.

Theory of operation: opens the audit store read-only, walks the `result` events
that match the filters (identity, connection, time window) in sequence order,
and folds each one's `meta["masking"]` (the masker's summary, absent when no
masker applied) into a `wardgate.masking.report.MaskingReport`. Renders a rich
table per connection, or the report as one JSON document with --json. Memory
grows with the number of distinct connections and columns, not with events.

Exit status: 0 ok, 1 store unavailable, 2 bad configuration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from wardgate.masking.report import MaskingReport

__all__ = ["register", "build_report"]

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The wardgate YAML configuration file.")
]


def build_report(
    store_url: str,
    *,
    identity: str | None = None,
    connection: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> MaskingReport:
    """Fold the matching `result` events of the store at `store_url` into a report."""
    from wardgate.audit.store import AuditStore

    report = MaskingReport()
    store = AuditStore.open(store_url, read_only=True)
    try:
        for event in store.events(
            kind="result", identity=identity, connection=connection, since=since, until=until
        ):
            report.add(event.connection, (event.meta or {}).get("masking"))
    finally:
        store.close()
    return report


def _render(report: MaskingReport, filters: dict[str, str | None]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from wardgate import termtext

    console = Console()
    shown = ", ".join(f"{k}={v}" for k, v in filters.items() if v) or "all result events"
    if not report.connections:
        console.print(f"No result events ({shown}).")
        return
    for name, conn in sorted(report.connections.items()):
        table = Table(
            title=(
                f"connection {name}: {conn.results} results ({conn.results_masked} masked, "
                f"{conn.results_unmasked} without a masker), {conn.rows_scanned} rows scanned"
            ),
            caption=f"rules: {', '.join(sorted(conn.rules)) or '-'}; filter: {shown}",
        )
        for header, justify in (
            ("column", "left"),
            ("entities found and masked", "left"),
            ("masked values", "right"),
            ("column rule", "left"),
            ("nulled", "right"),
            ("results", "right"),
            ("rows scanned", "right"),
        ):
            table.add_column(header, justify=justify)  # type: ignore[arg-type]
        for column, c in sorted(conn.columns.items()):
            entities = ", ".join(f"{e} {n}" for e, n in sorted(c.entities.items())) or "-"
            rules = (
                ", ".join(f"{r} ({s}) {n}" for (r, s), n in sorted(c.column_rules.items())) or "-"
            )
            # column names are the agent's (`SELECT email AS "..."`): plain text, shown
            cells = (column, entities, str(c.masked_values), rules, str(c.nulled),
                     str(c.results), str(c.rows_scanned))  # fmt: skip
            table.add_row(*(Text(termtext.shown(x)) for x in cells))
        if not conn.columns:
            table.add_row("(no column carried anything masked)", "-", "0", "-", "0", "0", "0")
        console.print(table)
    if report.malformed:
        console.print(f"[yellow]{report.malformed} result events had a malformed summary[/]")


def register(app: typer.Typer) -> None:
    masking = typer.Typer(help="Inline data masking.", no_args_is_help=True)
    app.add_typer(masking, name="masking")

    @masking.command("report")
    def report_cmd(
        config: ConfigOpt,
        since: Annotated[str | None, typer.Option(help="ISO-8601 time, inclusive")] = None,
        until: Annotated[str | None, typer.Option(help="ISO-8601 time, exclusive")] = None,
        identity: Annotated[str | None, typer.Option(help="Only this identity.")] = None,
        connection: Annotated[str | None, typer.Option(help="Only this connection.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    ) -> None:
        """Per connection and column: entity types masked, how many, which rules, nulled, rows scanned."""
        from wardgate.audit.records import StoreUnavailable
        from wardgate.config import load_config

        try:
            cfg = load_config(config)
        except Exception as exc:  # noqa: BLE001 - any configuration problem is exit 2
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        filters = {"identity": identity, "connection": connection, "since": since, "until": until}
        try:
            report = build_report(cfg.store, **filters)
        except StoreUnavailable as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        if as_json:
            doc = {"filters": filters, **report.as_dict()}
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        else:
            _render(report, filters)
