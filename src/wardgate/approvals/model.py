"""The approval objects: requests, decisions, grants, outcomes and their errors.

Theory of operation: an `Approval` is one held statement waiting for reviewers. It is
born ``pending`` and ends in exactly one of ``approved`` (enough distinct reviewers said
yes), ``denied`` (one reviewer said no), ``expired`` (nobody decided within its time to
live) or ``abandoned`` (the gateway holding it stopped). A `Grant` lets the same
normalized statement (fingerprint) by the same identity on the same connection run without
asking again until a time. `Outcome` is what the waiting engine gets back.

Errors carry an HTTP status so the API maps them without a table of its own:
404 unknown id, 403 not allowed (not a reviewer, own request), 409 no longer pending or
already decided by this reviewer, 400 bad input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Approval",
    "ApprovalError",
    "ApprovalNotFound",
    "ApprovalNotPending",
    "ApprovalForbidden",
    "ApprovalInvalid",
    "Grant",
    "Outcome",
    "ReviewerDirectory",
    "StaticReviewers",
    "Status",
    "format_parameters",
    "iso_time",
    "shown_parameters",
]

# what a request keeps of an Execute's bound parameters (already masked): enough for a
# reviewer to judge, bounded so a bulk load cannot bloat the request, its event or a
# webhook; the full (masked) values are in the command event's payload
MAX_SHOWN_PARAMETERS = 100
MAX_SHOWN_PARAMETER_CHARS = 1000


class Status:
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    ABANDONED = "abandoned"
    FINAL = frozenset({"approved", "denied", "expired", "abandoned"})


def iso_time(epoch: float) -> str:
    """ISO-8601 UTC with microseconds, the store's time format."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def shown_parameters(params: Iterable[str | None]) -> tuple[str | None, ...]:
    """Bound parameters as a request shows them: each cut at MAX_SHOWN_PARAMETER_CHARS
    and at most MAX_SHOWN_PARAMETERS, every cut said in the value itself."""
    out: list[str | None] = []
    items = list(params)
    for p in items[:MAX_SHOWN_PARAMETERS]:
        if p is not None and len(p) > MAX_SHOWN_PARAMETER_CHARS:
            p = f"{p[:MAX_SHOWN_PARAMETER_CHARS]}… [cut: {len(p):,} characters in all]"
        out.append(p)
    if len(items) > MAX_SHOWN_PARAMETERS:
        out.append(f"… [{len(items) - MAX_SHOWN_PARAMETERS:,} more parameters not shown]")
    return tuple(out)


def format_parameters(params: tuple[str | None, ...], width: int | None = None) -> str:
    """`$1='a', $2=NULL` (SQL-ish, for people); "" when there are none."""
    parts = []
    for i, p in enumerate(params, 1):
        if p is not None and p.startswith("… ["):
            parts.append(p)
            continue
        shown = "NULL" if p is None else "'" + p.replace("'", "''") + "'"
        parts.append(f"${i}={shown}")
    text = ", ".join(parts)
    if width is not None and len(text) > width:
        text = text[: width - 3] + "..."
    return text


class ApprovalError(Exception):
    """Base of every refusal from the broker; `http_status` is the API's status code."""

    http_status = 400


class ApprovalInvalid(ApprovalError):
    http_status = 400


class ApprovalNotFound(ApprovalError):
    http_status = 404


class ApprovalForbidden(ApprovalError):
    """Not a reviewer, or a reviewer deciding their own request."""

    http_status = 403


class ApprovalNotPending(ApprovalError):
    """Already approved, denied, expired or abandoned; or this reviewer already decided."""

    http_status = 409


@runtime_checkable
class ReviewerDirectory(Protocol):
    """Who may decide approvals. The identity registry implements it."""

    def is_reviewer(self, name: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class StaticReviewers:
    """A fixed set of reviewer names (tests, small setups)."""

    names: frozenset[str]

    @classmethod
    def of(cls, names: Iterable[str]) -> StaticReviewers:
        return cls(frozenset(names))

    def is_reviewer(self, name: str) -> bool:
        return name in self.names


@dataclass(frozen=True, slots=True)
class Decided:
    """One reviewer's decision on one request."""

    reviewer: str
    approve: bool
    reason: str | None
    decided_at: float
    grant_for_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Approval:
    """One held statement and where it stands."""

    id: str
    session: str
    identity: str
    connection: str
    fingerprint: str
    statement: str  # already masked by the engine
    rule: str
    reason: str | None  # the agent's justification (SET wardgate.reason)
    application_name: str | None
    client_addr: str | None
    requested_at: float
    expires_at: float
    approvals_required: int
    status: str
    decisions: tuple[Decided, ...] = field(default_factory=tuple)
    decided_at: float | None = None
    # an Execute's bound parameters, masked and bounded (shown_parameters); () for a
    # statement whose text carries its values
    parameters: tuple[str | None, ...] = ()

    @property
    def pending(self) -> bool:
        return self.status == Status.PENDING

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(d.reviewer for d in self.decisions if d.approve)

    @property
    def deciding_reason(self) -> str | None:
        """The reason that explains the final status (the denier's, else the last approver's)."""
        for d in self.decisions:
            if not d.approve:
                return d.reason
        reasons = [d.reason for d in self.decisions if d.approve and d.reason]
        return reasons[-1] if reasons else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "session": self.session,
            "identity": self.identity,
            "connection": self.connection,
            "rule": self.rule,
            "statement": self.statement,
            "parameters": list(self.parameters),
            "fingerprint": self.fingerprint,
            "reason": self.reason,
            "application_name": self.application_name,
            "client_addr": self.client_addr,
            "requested_at": iso_time(self.requested_at),
            "expires_at": iso_time(self.expires_at),
            "approvals_required": self.approvals_required,
            "approvals": list(self.approvers),
            "decisions": [
                {
                    "reviewer": d.reviewer,
                    "decision": "approve" if d.approve else "deny",
                    "reason": d.reason,
                    "time": iso_time(d.decided_at),
                    "grant_for_seconds": d.grant_for_seconds,
                }
                for d in self.decisions
            ],
            "decided_at": iso_time(self.decided_at) if self.decided_at else None,
        }


@dataclass(frozen=True, slots=True)
class Grant:
    """Standing permission for one normalized statement, identity and connection."""

    id: int
    identity: str
    connection: str
    fingerprint: str
    until: float
    approval_id: str
    granted_by: tuple[str, ...]
    created_at: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a wait ended. `reason` is the reviewer's reason, or why nobody decided."""

    approved: bool
    timed_out: bool
    reviewers: tuple[str, ...]
    reason: str | None
    status: str = Status.PENDING
