"""Audit: append-only Merkle log of events, signed checkpoints, verify, evidence.

The store contract lives in `wardgate.audit.store` (see STORE_API.md); the pieces are
`canonical` (bytes and hashes), `merkle` (tree, proofs, verifiers), `group_commit` (the
writer thread), `store` (SQLite store).
"""

from wardgate.audit.records import EventRecord, SessionSummary, StoreUnavailable
from wardgate.audit.store import AuditStore

__all__ = ["AuditStore", "EventRecord", "SessionSummary", "StoreUnavailable"]
