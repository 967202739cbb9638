"""`wardgate approvals list|show|approve|deny`: reviewers decide held statements from a shell.

Theory of operation: each command loads the configuration, opens the same audit store as
the running gateway (``cfg.store``) and builds an `ApprovalBroker` on it *without*
starting it (starting would abandon the gateway's pending requests). `decide` writes the
shared approval tables and appends ``approval_decided`` (and ``approval_grant``) events;
the gateway's waiting session notices within its poll interval and runs or refuses the
statement. Reviewers are checked against the configuration (``roles: [reviewer]`` or a
group in ``approvals.reviewer_groups``), without resolving any token.

Exit status: 0 done, 1 refused (unknown id, not pending, not a reviewer, own request,
audit store unavailable), 2 bad configuration or arguments.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from wardgate.approvals.broker import ApprovalBroker
from wardgate.approvals.durations import format_duration, parse_duration
from wardgate.approvals.model import (
    Approval,
    ApprovalError,
    Status,
    format_parameters,
    iso_time,
)
from wardgate.termtext import json_line, shown

__all__ = ["register", "ConfigReviewers"]

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The wardgate YAML configuration file.")
]
AsOpt = Annotated[str, typer.Option("--as", help="The reviewer deciding (an identity name).")]

console = Console()
err = Console(stderr=True)


class ConfigReviewers:
    """ReviewerDirectory over the configuration's identities (no token is resolved)."""

    def __init__(self, cfg: Any) -> None:
        self._identities = {i.name: i for i in cfg.identities}
        self._groups = frozenset(cfg.approvals.reviewer_groups)

    def is_reviewer(self, name: str) -> bool:
        ident = self._identities.get(name)
        if ident is None or ident.disabled:
            return False
        return "reviewer" in ident.roles or bool(self._groups.intersection(ident.groups))


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"wardgate: {message}", highlight=False, markup=False)
    return typer.Exit(code)


@contextmanager
def _broker(config: Path) -> Iterator[ApprovalBroker]:
    from wardgate.audit.store import AuditStore, StoreUnavailable
    from wardgate.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        err.print(f"wardgate: configuration error\n{exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    try:
        store = AuditStore.open(cfg.store, durability=cfg.audit.durability)
    except (StoreUnavailable, OSError, ValueError) as exc:
        raise _fail(f"cannot open the audit store: {exc}") from None
    try:
        yield ApprovalBroker(store, reviewers=ConfigReviewers(cfg))
    except ApprovalError as exc:
        raise _fail(str(exc)) from None
    except StoreUnavailable as exc:
        raise _fail(f"the audit store is unavailable, nothing was decided: {exc}") from None
    finally:
        store.close()


def _shorten(text: str, width: int = 60) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 3] + "..."


def _list(config: ConfigOpt, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Requests waiting for a decision, oldest first."""
    with _broker(config) as broker:
        pending = broker.pending()
    if as_json:
        sys.stdout.write(json_line([a.to_json() for a in pending]) + "\n")
        return
    if not pending:
        console.print("no approval requests are pending")
        return
    now = time.time()
    if not sys.stdout.isatty():  # scripts and pipes: one tab-separated line per request
        for a in pending:
            fields = (
                a.id,
                a.identity,
                a.connection,
                a.rule,
                f"{len(a.approvers)}/{a.approvals_required}",
                format_duration(max(0.0, a.expires_at - now)),
                a.application_name or "",
                a.reason or "",
                _shorten(a.statement, 200),
            )  # unchanged fields for scripts; the parameters are in --json
            # tabs and line breaks would split fields and lines; every control character
            # an agent put in a statement, reason or name is shown as an escape
            sys.stdout.write("\t".join(shown(f) for f in fields) + "\n")
        return
    table = Table(show_lines=False)
    for column in ("id", "identity", "connection", "rule", "statement", "reason", "expires in"):
        table.add_column(column, overflow="fold")
    for a in pending:
        need = f" ({len(a.approvers)}/{a.approvals_required})" if a.approvals_required > 1 else ""
        # the statement, reason and application name are the agent's: each cell is plain
        # text (no rich markup) with control and invisible characters shown as escapes,
        # so the reviewer sees what will run
        cells = (
            a.id + need,
            a.identity + (f" [{a.application_name}]" if a.application_name else ""),
            a.connection,
            a.rule,
            shown(_shorten(a.statement))
            + (f"\n{shown(format_parameters(a.parameters, 120))}" if a.parameters else ""),
            a.reason or "",
            format_duration(max(0.0, a.expires_at - now)),
        )
        table.add_row(*(Text(c if i == 4 else shown(c)) for i, c in enumerate(cells)))
    console.print(table)
    if any(len(" ".join(a.statement.split())) > 60 for a in pending):
        console.print(
            "statements are cut to 60 characters: `wardgate approvals show ID` prints one whole",
            highlight=False,
            markup=False,
        )


def _show(
    approval_id: Annotated[str, typer.Argument(help="The approval id, e.g. ap-7k3mq9xz.")],
    config: ConfigOpt,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One request in full: the whole statement (as it will run), every parameter shown,
    who asked and why, and the decisions so far."""
    with _broker(config) as broker:
        a = broker.get(approval_id)
    if a is None:
        raise _fail(f"no approval request {shown(approval_id)!r}")
    if as_json:
        sys.stdout.write(json_line(a.to_json()) + "\n")
        return
    now = time.time()
    app = f" [{a.application_name}]" if a.application_name else ""
    lines = [
        f"approval    {a.id}  {a.status}",
        f"identity    {a.identity}{app} on {a.connection}",
        f"client      {a.client_addr or '-'}",
        f"rule        {a.rule}",
        f"reason      {a.reason or '-'}",
        f"requested   {iso_time(a.requested_at)}",
        f"expires in  {format_duration(max(0.0, a.expires_at - now))}"
        if a.pending
        else f"decided     {iso_time(a.decided_at) if a.decided_at else '-'}",
        f"approvals   {len(a.approvers)}/{a.approvals_required}",
    ]
    lines += [
        f"decision    {d.reviewer}: {'approve' if d.approve else 'deny'}"
        + (f" ({d.reason})" if d.reason else "")
        for d in a.decisions
    ]
    for line in lines:
        console.print(shown(line), highlight=False, markup=False)
    # the statement keeps its line breaks; every other control or invisible character
    # is shown as an escape, so what is printed is what will run
    console.print("statement:", highlight=False, markup=False)
    for line in shown(a.statement, newlines=True).split("\n"):
        console.print("    " + line, highlight=False, markup=False)
    if a.parameters:
        console.print("parameters:", highlight=False, markup=False)
        for i, p in enumerate(a.parameters, 1):
            if p is not None and p.startswith("… ["):  # a cut said by shown_parameters
                text = f"    {p}"
            else:
                text = f"    ${i} = " + ("NULL" if p is None else "'" + p.replace("'", "''") + "'")
            console.print(shown(text), highlight=False, markup=False)


def _report(a: Approval, verb: str, reviewer: str) -> None:
    if a.status == Status.PENDING:
        console.print(
            f"{reviewer} approved {a.id}: {len(a.approvers)} of {a.approvals_required} "
            "approvals, still pending",
            highlight=False,
        )
    else:
        console.print(f"{a.id} {a.status} ({verb} by {reviewer})", highlight=False)


def _approve(
    approval_id: Annotated[str, typer.Argument(help="The approval id, e.g. ap-7k3mq9xz.")],
    reviewer: AsOpt,
    config: ConfigOpt,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    grant_for: Annotated[
        str | None,
        typer.Option(
            "--for",
            help="Also let the same statement by the same identity on the same connection "
            "run without asking for this long (e.g. 1h, 7d).",
        ),
    ] = None,
) -> None:
    """Approve a held statement."""
    seconds = None
    if grant_for is not None:
        try:
            seconds = parse_duration(grant_for)
        except ValueError as exc:
            raise _fail(f"--for: {exc}", 2) from None
    with _broker(config) as broker:
        a = broker.decide(
            approval_id, reviewer, approve=True, reason=reason, grant_for_seconds=seconds
        )
        grant = broker.active_grant(a.identity, a.connection, a.fingerprint)
    _report(a, "approved", reviewer)
    if grant is not None and grant.approval_id == a.id:
        console.print(
            f"granted: {a.identity} on {a.connection} may run this statement until "
            f"{iso_time(grant.until)}",
            highlight=False,
        )
    elif seconds is not None and a.status == Status.APPROVED:
        console.print("no grant: every approving reviewer must ask for one", highlight=False)


def _deny(
    approval_id: Annotated[str, typer.Argument(help="The approval id, e.g. ap-7k3mq9xz.")],
    reviewer: AsOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why (the agent sees it).")],
    config: ConfigOpt,
) -> None:
    """Deny a held statement; the agent gets an error with your reason."""
    if not reason.strip():
        raise _fail("--reason must not be empty", 2)
    with _broker(config) as broker:
        a = broker.decide(approval_id, reviewer, approve=False, reason=reason)
    _report(a, "denied", reviewer)


def register(app: typer.Typer) -> None:
    """Add the ``approvals`` command group to the ``wardgate`` app."""
    group = typer.Typer(
        name="approvals",
        help="List, approve and deny statements held for review.",
        no_args_is_help=True,
    )
    group.command("list")(_list)
    group.command("show")(_show)
    group.command("approve")(_approve)
    group.command("deny")(_deny)
    app.add_typer(group, name="approvals")
