"""Retention: purge old payloads while keeping every event, hash and proof.

Theory of operation: payloads (statement texts, rows, terminal output) are stored apart
from events, addressed by SHA-256, so purging one keeps its hash inside the event body and
every Merkle proof intact. `apply_retention` first appends a `retention_purge` event
(durable, in the log, meta {older_than, payloads_purged, cutoff}), then, in one writer
transaction, sets `data` to NULL in the payload copy of every event older than the cutoff
(time never decreases with seq, so "older" is a seq range; a newer event with the same
payload keeps its own copy). Recording first means a crash in between leaves payloads
that are merely kept longer, never payloads missing without a recorded reason. Verify treats a missing payload
of an event older than the latest recorded cutoff as purged, anything else as tampering.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from wardgate.audit.group_commit import utc_now
from wardgate.audit.layout import read_layout, seq_at_time
from wardgate.audit.merkle import MerkleFrontier
from wardgate.audit.store import AuditStore

__all__ = ["RetentionResult", "parse_window", "apply_retention"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# the payload copies of events older than the cutoff (one per event, so a newer event
# with the same payload keeps its own copy); counted as distinct payloads
_CANDIDATES = """
    SELECT p.seq FROM payload_rows p WHERE p.data IS NOT NULL AND p.seq < :bound
"""


def _first_seq_at(conn: sqlite3.Connection, cutoff: str) -> int:
    """The first seq whose time is >= cutoff (past the end if none): a binary search where
    time never decreases with seq (layout 3), else a scan of the time column. This runs
    inside the writer's transaction, so it must not hold appends up on a large store."""
    if read_layout(conn).time_ordered:
        return seq_at_time(conn, cutoff)
    (first,) = conn.execute(
        "SELECT coalesce(min(seq), 1 << 62) FROM events WHERE time >= ?", (cutoff,)
    ).fetchone()
    return first


@dataclass(frozen=True, slots=True)
class RetentionResult:
    cutoff: str
    payloads_purged: int
    event_seq: int


def parse_window(text: str) -> timedelta:
    """'90d', '12h', '30m', '45s', '2w' -> timedelta."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(f"bad duration {text!r}: use a number and one of s, m, h, d, w")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def apply_retention(
    store: AuditStore, older_than: str, *, now: datetime | None = None
) -> RetentionResult:
    """Purge payloads of events older than `older_than` (e.g. '90d'); record the purge."""
    window = parse_window(older_than)
    now = now or datetime.now(UTC)
    cutoff = (now - window).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def count(conn: sqlite3.Connection, _f: MerkleFrontier) -> int:
        sql = f"SELECT count(DISTINCT hash) FROM payload_rows WHERE seq IN ({_CANDIDATES})"
        return conn.execute(sql, {"bound": _first_seq_at(conn, cutoff)}).fetchone()[0]

    n = store.transact(count).result()
    rec = store.append_sync(
        "retention_purge",
        meta={"older_than": older_than, "payloads_purged": n, "cutoff": cutoff},
    )

    def purge(conn: sqlite3.Connection, _f: MerkleFrontier) -> int:
        n = count(conn, _f)  # distinct payloads, as recorded (one may have several copies)
        conn.execute(
            f"UPDATE payload_rows SET data = NULL, purged = :now WHERE seq IN ({_CANDIDATES})",
            {"bound": _first_seq_at(conn, cutoff), "now": utc_now()},
        )
        return n

    purged = store.transact(purge).result()
    return RetentionResult(cutoff, purged, rec.seq)
