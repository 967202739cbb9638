"""The protocol-neutral objects that flow through the pipeline.

An engine turns wire traffic into `Command`s; `policy` turns a `Command` into a
`Decision`; the engine acts on the decision (forward, refuse, hold) and the audit log
records both. Nothing here knows about sockets, codecs or the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Command", "Decision", "Verdict", "MaskDirective", "SessionInfo"]


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who is on the other end of one agent connection."""

    session_id: str
    identity: str
    groups: tuple[str, ...]
    connection: str
    protocol: str  # "postgres", "mysql", "ssh", ...
    client_addr: str
    application_name: str | None = None
    reason: str | None = None  # justification set by the agent (SET wardgate.reason)


@dataclass(frozen=True, slots=True)
class Command:
    """One statement (or one shell command) an agent asked to run.

    A multi-statement simple query gives one Command per statement; `index` is the
    statement's position inside the message that carried it.
    """

    session: SessionInfo
    text: str
    parameters: tuple[str | None, ...] = ()
    index: int = 0
    # "simple" | "parse" | "bind" | "function_call" | "copy" | ...: how it arrived.
    via: str = "simple"

    @property
    def identity(self) -> str:
        return self.session.identity

    @property
    def groups(self) -> tuple[str, ...]:
        return self.session.groups

    @property
    def connection(self) -> str:
        return self.session.connection

    @property
    def protocol(self) -> str:
        return self.session.protocol


@dataclass(frozen=True, slots=True)
class MaskDirective:
    """What a matching `mask` rule asks for: entity types, columns and a strategy."""

    rule: str  # "<policy>/<rule>"
    entities: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()  # "customers.email", "*.ssn", "email"
    strategy: str = "redact"  # redact | partial | token | hash


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one Command, naming the rule that produced it."""

    verdict: Verdict
    rule: str  # "<policy>/<rule>", e.g. "baseline/deny-drop-table"
    reason: str = ""
    # review only
    review_ttl_seconds: float | None = None
    approvals_required: int = 1
    # masking directives from every matching mask rule (they accumulate)
    masks: tuple[MaskDirective, ...] = ()
    # facts the classifier derived, recorded as evidence (statement kinds, objects, ...)
    facts: dict[str, Any] = field(default_factory=dict)
    # True when constants in the statement played no part, so the decision may be
    # cached by the statement's normalized fingerprint
    cacheable: bool = False

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW
