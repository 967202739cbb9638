"""Approval state in SQLite tables beside the audit log (same file, own connection).

Theory of operation: the audit log (events) is append-only evidence; this module keeps the
*current* state that the broker, the CLI and the HTTP API share across processes:
``approvals`` (one row per request), ``approval_decisions`` (one row per reviewer and
request) and ``approval_grants``. Every change runs in a ``BEGIN IMMEDIATE`` transaction,
so a CLI and a gateway deciding the same request at once serialize on SQLite's lock and the
second sees the first's result. WAL mode lets readers (the gateway's slow poll) run while
another process writes. No transaction is held while an audit event is appended: the store
writes to the same file and would wait on our lock.

A decision is written in two steps: `reserve_decision` (row with ``recorded = 0``, status
unchanged) before its audit event, then `confirm_decision` (``recorded = 1``, status
recomputed) after the event is durable, or `drop_decision` if the event could not be made
durable. Only recorded decisions count, so nothing is approved without its evidence. While one
reviewer's decision is reserved and not yet confirmed, another's on the same request is
refused, so no decision is recorded that then does not count.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .model import Approval, ApprovalNotFound, ApprovalNotPending, Decided, Grant, Status

__all__ = ["ApprovalState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    session TEXT NOT NULL,
    identity TEXT NOT NULL,
    connection TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    statement TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT,
    application_name TEXT,
    client_addr TEXT,
    requested_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    approvals_required INTEGER NOT NULL,
    status TEXT NOT NULL,
    decided_at REAL,
    parameters TEXT
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status);
CREATE TABLE IF NOT EXISTS approval_decisions (
    approval_id TEXT NOT NULL REFERENCES approvals(id),
    reviewer TEXT NOT NULL,
    approve INTEGER NOT NULL,
    reason TEXT,
    decided_at REAL NOT NULL,
    grant_for_seconds REAL,
    recorded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (approval_id, reviewer)
);
CREATE TABLE IF NOT EXISTS approval_grants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    connection TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    until REAL NOT NULL,
    approval_id TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS approval_grants_key
    ON approval_grants(identity, connection, fingerprint, until);
"""

_COLUMNS = (
    "id, session, identity, connection, fingerprint, statement, rule, reason, "
    "application_name, client_addr, requested_at, expires_at, approvals_required, status, "
    "decided_at, parameters"
)


# how long a reserved, unconfirmed decision holds off other reviewers' (its audit event is
# normally durable within milliseconds; a writer restart takes seconds)
IN_FLIGHT_SECONDS = 30.0


class ApprovalState:
    """Thread-safe access to the approval tables in `path`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            # tables from before bound parameters were kept (NULL reads as none)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(approvals)")}
            if "parameters" not in columns:
                self._db.execute("ALTER TABLE approvals ADD COLUMN parameters TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- requests -------------------------------------------------------------------------

    def insert(self, approval: Approval, run_id: str) -> None:
        a = approval
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO approvals (run_id, {_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    a.id,
                    a.session,
                    a.identity,
                    a.connection,
                    a.fingerprint,
                    a.statement,
                    a.rule,
                    a.reason,
                    a.application_name,
                    a.client_addr,
                    a.requested_at,
                    a.expires_at,
                    a.approvals_required,
                    a.status,
                    a.decided_at,
                    json.dumps(list(a.parameters), ensure_ascii=False) if a.parameters else None,
                ),
            )

    def get(self, approval_id: str) -> Approval | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)
            ).fetchone()
            return self._build(row) if row else None

    def status(self, approval_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status FROM approvals WHERE id = ?", (approval_id,)
            ).fetchone()
        return row[0] if row else None

    def pending(self, now: float) -> list[Approval]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE status = ? AND expires_at > ? "
                "ORDER BY requested_at, id",
                (Status.PENDING, now),
            ).fetchall()
            return [self._build(r) for r in rows]

    def pending_ids(self, *, run_id: str | None = None, not_run_id: str | None = None) -> list[str]:
        sql, args = "SELECT id FROM approvals WHERE status = ?", [Status.PENDING]
        if run_id is not None:
            sql, args = sql + " AND run_id = ?", [*args, run_id]
        if not_run_id is not None:
            sql, args = sql + " AND run_id != ?", [*args, not_run_id]
        with self._lock:
            return [r[0] for r in self._db.execute(sql + " ORDER BY requested_at", args)]

    def finish(self, approval_id: str, status: str, now: float) -> bool:
        """Move a pending request to a final status; False if it was no longer pending."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE approvals SET status = ?, decided_at = ? WHERE id = ? AND status = ?",
                (status, now, approval_id, Status.PENDING),
            )
            return cur.rowcount == 1

    # -- decisions ------------------------------------------------------------------------

    def reserve_decision(self, approval_id: str, decided: Decided, now: float) -> Approval:
        """Check the request can take this reviewer's decision and hold their slot.

        Raises ApprovalNotFound, or ApprovalNotPending (final, expired, already decided).
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, expires_at FROM approvals WHERE id = ?", (approval_id,)
            ).fetchone()
            if row is None:
                raise ApprovalNotFound(f"no approval request {approval_id!r}")
            status, expires_at = row
            if status != Status.PENDING:
                raise ApprovalNotPending(f"approval {approval_id} is already {status}")
            if now >= expires_at:
                raise ApprovalNotPending(f"approval {approval_id} has expired")
            done = db.execute(
                "SELECT approve FROM approval_decisions WHERE approval_id = ? AND reviewer = ?",
                (approval_id, decided.reviewer),
            ).fetchone()
            if done is not None:
                verb = "approved" if done[0] else "denied"
                raise ApprovalNotPending(
                    f"{decided.reviewer} already {verb} approval {approval_id}"
                )
            # another reviewer's decision between its reservation and its confirmation:
            # taking this one too would append an event that may not count (a denial
            # recorded next to a statement that ran); one at a time. A reservation older
            # than IN_FLIGHT_SECONDS was left by a process that died and blocks nothing.
            busy = db.execute(
                "SELECT reviewer FROM approval_decisions WHERE approval_id = ? AND recorded = 0"
                " AND reviewer != ? AND decided_at > ?",
                (approval_id, decided.reviewer, now - IN_FLIGHT_SECONDS),
            ).fetchone()
            if busy is not None:
                raise ApprovalNotPending(
                    f"{busy[0]} is deciding approval {approval_id} right now; look again"
                )
            db.execute(
                "INSERT INTO approval_decisions (approval_id, reviewer, approve, reason, "
                "decided_at, grant_for_seconds, recorded) VALUES (?, ?, ?, ?, ?, ?, 0)",
                (
                    approval_id,
                    decided.reviewer,
                    int(decided.approve),
                    decided.reason,
                    decided.decided_at,
                    decided.grant_for_seconds,
                ),
            )
        approval = self.get(approval_id)
        assert approval is not None
        return approval

    def drop_decision(self, approval_id: str, reviewer: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM approval_decisions WHERE approval_id = ? AND reviewer = ? "
                "AND recorded = 0",
                (approval_id, reviewer),
            )

    def confirm_decision(
        self, approval_id: str, reviewer: str, now: float
    ) -> tuple[Approval, bool]:
        """Count the decision; return the request and whether this call finalized it."""
        with self._transaction() as db:
            db.execute(
                "UPDATE approval_decisions SET recorded = 1 WHERE approval_id = ? AND reviewer = ?",
                (approval_id, reviewer),
            )
            status, required = db.execute(
                "SELECT status, approvals_required FROM approvals WHERE id = ?", (approval_id,)
            ).fetchone()
            finalized = False
            if status == Status.PENDING:
                rows = db.execute(
                    "SELECT approve FROM approval_decisions WHERE approval_id = ? AND recorded = 1",
                    (approval_id,),
                ).fetchall()
                new = None
                if any(not r[0] for r in rows):
                    new = Status.DENIED
                elif sum(1 for r in rows if r[0]) >= required:
                    new = Status.APPROVED
                if new is not None:
                    db.execute(
                        "UPDATE approvals SET status = ?, decided_at = ? WHERE id = ?",
                        (new, now, approval_id),
                    )
                    finalized = True
        approval = self.get(approval_id)
        assert approval is not None
        return approval, finalized

    # -- grants ---------------------------------------------------------------------------

    def add_grant(self, grant: Grant) -> Grant:
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO approval_grants (identity, connection, fingerprint, until, "
                "approval_id, granted_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    grant.identity,
                    grant.connection,
                    grant.fingerprint,
                    grant.until,
                    grant.approval_id,
                    ",".join(grant.granted_by),
                    grant.created_at,
                ),
            )
            grant_id = int(cur.lastrowid or 0)
        return Grant(
            grant_id,
            grant.identity,
            grant.connection,
            grant.fingerprint,
            grant.until,
            grant.approval_id,
            grant.granted_by,
            grant.created_at,
        )

    def active_grant(
        self, identity: str, connection: str, fingerprint: str, now: float
    ) -> Grant | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, identity, connection, fingerprint, until, approval_id, granted_by, "
                "created_at FROM approval_grants WHERE identity = ? AND connection = ? "
                "AND fingerprint = ? AND until > ? ORDER BY until DESC LIMIT 1",
                (identity, connection, fingerprint, now),
            ).fetchone()
        if row is None:
            return None
        return Grant(
            row[0], row[1], row[2], row[3], row[4], row[5], tuple(row[6].split(",")), row[7]
        )

    # -- helpers --------------------------------------------------------------------------

    def _build(self, row: tuple) -> Approval:
        decisions = tuple(
            Decided(r[0], bool(r[1]), r[2], r[3], r[4])
            for r in self._db.execute(
                "SELECT reviewer, approve, reason, decided_at, grant_for_seconds "
                "FROM approval_decisions WHERE approval_id = ? AND recorded = 1 "
                "ORDER BY decided_at, reviewer",
                (row[0],),
            )
        )
        params = tuple(json.loads(row[15])) if row[15] else ()
        return Approval(*row[:14], decisions=decisions, decided_at=row[14], parameters=params)
