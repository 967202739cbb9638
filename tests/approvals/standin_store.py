"""A stand-in for wardgate.audit.store.AuditStore until the real store lands (then deleted).

Same calls as the contract (append / append_sync / submit / events / path / close), events
kept in a table of the same SQLite file so cross-process and lock behaviour is realistic.
"""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class StoreUnavailable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class EventRecord:
    seq: int
    time: str
    session: str | None
    identity: str | None
    connection: str | None
    kind: str
    verdict: str | None
    rule: str | None
    payload_hash: str | None
    meta: dict[str, Any]


class StandinStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fail = False
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS standin_events (seq INTEGER PRIMARY KEY, body TEXT)"
        )

    @classmethod
    def open(cls, url: str, **_: Any) -> StandinStore:
        return cls(Path(url.removeprefix("sqlite://")))

    def append_sync(self, kind: str, **fields: Any) -> EventRecord:
        if self.fail:
            raise StoreUnavailable("disk on fire")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            (seq,) = self._db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM standin_events"
            ).fetchone()
            rec = EventRecord(
                seq=seq,
                time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                session=fields.get("session"),
                identity=fields.get("identity"),
                connection=fields.get("connection"),
                kind=kind,
                verdict=fields.get("verdict"),
                rule=fields.get("rule"),
                payload_hash=None,
                meta=dict(fields.get("meta") or {}),
            )
            body = {k: getattr(rec, k) for k in EventRecord.__slots__}
            self._db.execute("INSERT INTO standin_events VALUES (?, ?)", (seq, json.dumps(body)))
            self._db.execute("COMMIT")
        return rec

    async def append(self, kind: str, **fields: Any) -> EventRecord:
        return self.append_sync(kind, **fields)

    def submit(self, kind: str, **fields: Any) -> concurrent.futures.Future[EventRecord]:
        fut: concurrent.futures.Future[EventRecord] = concurrent.futures.Future()
        try:
            fut.set_result(self.append_sync(kind, **fields))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def events(self, *, kind: str | None = None, **_: Any) -> list[EventRecord]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM standin_events ORDER BY seq").fetchall()
        out = [EventRecord(**json.loads(r[0])) for r in rows]
        return [e for e in out if kind is None or e.kind == kind]

    def close(self) -> None:
        self._db.close()
