"""Value types of the audit store: events, session summaries, the failure exception.

Theory of operation: these are plain frozen records handed out by `AuditStore`; they
live apart from the store so the writer thread, verify and evidence code can share them
without importing the store. `EventRecord.body` is the exact canonical JSON hashed into
the Merkle leaf; the other fields are the same values, decoded for convenience.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StoreUnavailable", "EventRecord", "SessionSummary", "make_record"]


class StoreUnavailable(Exception):
    """Any failure to make an event durable (or to open the store at all)."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    seq: int
    time: str  # ISO-8601 UTC with microseconds, e.g. "2026-11-26T10:22:01.123456Z"
    session: str | None
    identity: str | None
    connection: str | None
    kind: str
    verdict: str | None
    rule: str | None
    payload_hash: str | None  # hex SHA-256 of the payload bytes, or None
    meta: dict[str, Any]
    body: bytes  # the canonical JSON hashed into the Merkle leaf

    def fields(self) -> dict[str, Any]:
        """The ten canonical keys as a dict (what `body` encodes)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "session": self.session,
            "identity": self.identity,
            "connection": self.connection,
            "kind": self.kind,
            "verdict": self.verdict,
            "rule": self.rule,
            "payload_hash": self.payload_hash,
            "meta": self.meta,
        }


_S = tuple(getattr(EventRecord, f).__set__ for f in EventRecord.__slots__)  # type: ignore[attr-defined]
_new = object.__new__


def make_record(seq: int, time: str, session: str | None, identity: str | None,
                connection: str | None, kind: str, verdict: str | None, rule: str | None,
                payload_hash: str | None, meta: dict[str, Any], body: bytes) -> EventRecord:  # fmt: skip
    """`EventRecord(...)` in a third of the time (the writer makes one per event): the
    frozen dataclass __init__ goes through object.__setattr__ per field."""
    r = _new(EventRecord)
    _S[0](r, seq)
    _S[1](r, time)
    _S[2](r, session)
    _S[3](r, identity)  # noqa: E702
    _S[4](r, connection)
    _S[5](r, kind)
    _S[6](r, verdict)
    _S[7](r, rule)  # noqa: E702
    _S[8](r, payload_hash)
    _S[9](r, meta)
    _S[10](r, body)  # noqa: E702
    return r


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One agent session, from its session_start event and what followed."""

    session: str
    identity: str | None
    connection: str | None
    started: str
    start_seq: int
    ended: str | None = None
    end_reason: str | None = None
    statements: int = 0
    allowed: int = 0
    denied: int = 0
    reviewed: int = 0
    client_addr: str | None = None
    protocol: str | None = None
    application_name: str | None = None
    database: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
