"""Helpers for the approval and API tests: a store on a SQLite file, commands, decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wardgate.audit.store import AuditStore, StoreUnavailable
from wardgate.pipeline.command import Command, Decision, SessionInfo, Verdict

__all__ = ["open_store", "StoreUnavailable", "make_command", "make_decision", "kinds"]


def open_store(path: Path) -> AuditStore:
    return AuditStore.open(str(path))


def make_command(
    text: str = "DELETE FROM orders",
    *,
    identity: str = "ci-bot",
    reason: str | None = "nightly cleanup",
    session_id: str = "s-1",
) -> Command:
    session = SessionInfo(
        session_id=session_id,
        identity=identity,
        groups=("ci",),
        connection="prod",
        protocol="postgres",
        client_addr="10.0.0.7:51234",
        application_name="psql",
        reason=reason,
    )
    return Command(session=session, text=text)


def make_decision(*, ttl: float | None = 600.0, required: int = 1) -> Decision:
    return Decision(
        verdict=Verdict.REVIEW,
        rule="baseline/review-delete-without-where",
        reason="DELETE without WHERE",
        review_ttl_seconds=ttl,
        approvals_required=required,
    )


def kinds(store: Any) -> list[str]:
    return [e.kind for e in store.events()]
