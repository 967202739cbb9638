"""Fixtures for the approval tests: a store on a temporary SQLite file, commands, decisions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wardgate.pipeline.command import Command, Decision, SessionInfo, Verdict


def open_store(path: Path) -> Any:
    """The real audit store when it exists, else the temporary stand-in."""
    try:
        from wardgate.audit.store import AuditStore
    except ImportError:
        from approvals.standin_store import StandinStore

        return StandinStore(path)
    return AuditStore.open(str(path))


def store_failure() -> type[Exception]:
    try:
        from wardgate.audit.store import StoreUnavailable
    except ImportError:
        from approvals.standin_store import StoreUnavailable
    return StoreUnavailable


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    s = open_store(tmp_path / "audit.db")
    yield s
    s.close()


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
