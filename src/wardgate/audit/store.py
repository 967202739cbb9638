"""The audit store: an append-only Merkle log of events in SQLite (WAL mode).

Theory of operation: `AuditStore.open(url)` creates the file and schema and starts one
`GroupCommitWriter` thread (group_commit.py) that owns the only write connection. Appends
from any thread or coroutine are queued and group-committed; `append` returns (or its
future resolves) only once the event, its payload and the Merkle tree nodes it completes
are committed. Reads (`events`, `event`, `payload`, `sessions`, proofs) use one read-only
connection per calling thread; WAL lets them run alongside the writer and see only
committed data.

Tables (layout.py has the schema, layout 3, and the layouts before it): `events` (one row per
leaf, seq = leaf index, never updated or deleted; `body` is the canonical JSON that was
hashed, `leaf` its leaf hash), `payload_rows` (the payload bytes of each event that has
one, by seq; retention sets `data` to NULL and `purged` to the time), `tiles` (the complete subtree hashes above the leaves, 255 per row): a proof or a
root at any size is O(log n) point reads. `checkpoints`: signed tree heads, written by
checkpoint.py.

Durability: "full" is `synchronous=FULL`: every group commit fsyncs the WAL, so an
appended event survives power loss. "normal" is `synchronous=NORMAL`: the WAL is fsynced
only at WAL checkpoints, so a power loss (not a process crash) can lose the last commits.
Group commit makes "full" cheap: one fsync per batch, not per event.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from wardgate.audit.canonical import EMPTY_ROOT
from wardgate.audit.group_commit import AppendFuture, AppendRequest, GroupCommitWriter, Job
from wardgate.audit.layout import (
    SCHEMA,
    SCHEMA_VERSION,
    ConnNodeReader,
    TileBuilder,
    payload_by_hash,
    payload_row,
    prepare_writer,
    read_layout,
    seq_at_time,
)
from wardgate.audit.merkle import (
    MerkleFrontier,
    NodeKey,
    consistency_proof,
    inclusion_proof,
    root_at,
)
from wardgate.audit.records import EventRecord, SessionSummary, StoreUnavailable

__all__ = [
    "AuditStore",
    "EventRecord",
    "SessionSummary",
    "StoreUnavailable",
    "parse_store_url",
    "SCHEMA",
]

T = TypeVar("T")

_DURABILITY = {"full": "FULL", "normal": "NORMAL"}
_BUSY_TIMEOUT_MS = 2000
_EVENT_COLS = (
    "seq, time, session, identity, connection, kind, verdict, rule, payload_hash, meta, body"
)


def parse_store_url(url: str | Path) -> Path:
    """`sqlite:///abs/path.db`, `sqlite://rel/path.db` or a plain path -> Path."""
    s = str(url)
    if s.startswith("sqlite://"):
        rest = s[len("sqlite://") :]
        return Path("/" + rest.lstrip("/")) if rest.startswith("/") else Path(rest)
    if "://" in s:
        raise ValueError(f"unsupported audit store url: {s!r} (only sqlite is built in)")
    return Path(s)


def _row_to_record(row: Sequence[Any]) -> EventRecord:
    seq, time, session, identity, connection, kind, verdict, rule, ph, meta, body = row
    return EventRecord(
        seq, time, session, identity, connection, kind, verdict, rule, ph, json.loads(meta), body
    )


class AuditStore:
    """Append-only audit log with Merkle proofs; see the module docstring."""

    path: Path
    # True where `submit_nowait` holds an event back for the next one to share its group
    # commit (the writer process); here it goes to the writer at once, so the relay holds
    # a result event for the session's next command itself
    nowait_waits_for_company = False

    def __init__(self, path: Path, durability: str, read_only: bool) -> None:
        if durability not in _DURABILITY:
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.path = path
        self.durability = durability
        self.read_only = read_only
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: GroupCommitWriter | None = None
        self._closed = False
        self._version: int | None = None  # on-disk layout (layout.py), read once
        self._time_ordered = False  # layout.StoreLayout.time_ordered, read with it
        # payload hash -> seq of an event handed out by events()/event() that names it:
        # layout 3 finds a payload by its event's seq (no index by hash), and callers
        # look payloads up by the hash of an event they just read (replay, CLI)
        self._payload_seqs: dict[str, int] = {}
        self._edge_tiles: dict[int, bytes] = {}  # see ConnNodeReader

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str | Path,
        *,
        durability: str = "full",
        read_only: bool = False,
        drive: Callable[[], None] | None = None,
    ) -> AuditStore:
        """Open (creating file, directories and schema) and start the writer thread.

        `read_only=True` opens an existing store for reading (verify, export): no writer,
        appends raise StoreUnavailable. Raises StoreUnavailable if the file cannot be used.
        `drive`: no writer thread; the calling thread drives the writer (the audit writer
        process: `GroupCommitWriter.start_inline`, `drive` is its `wake`).
        """
        path = parse_store_url(url)
        store = cls(path, durability, read_only)
        if read_only:
            if not path.exists():
                raise StoreUnavailable(f"audit store not found: {path}")
            store._reader()  # fail now, not on first read
            return store
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"audit store directory unusable: {exc}") from exc
        writer = GroupCommitWriter(store._connect_writer, name=f"wardgate-audit:{path.name}")
        if drive is None:
            writer.start(store._load_state)
        else:
            writer.start_inline(store._load_state, drive)
        store._writer = writer
        return store

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=_BUSY_TIMEOUT_MS / 1000,
        )
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreUnavailable(f"cannot put {self.path} in WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={_DURABILITY[self.durability]}")
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        try:
            prepare_writer(conn)  # creates layout 3, or migrates a layout 1 or 2 store to it
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _load_state(conn: sqlite3.Connection) -> tuple[MerkleFrontier, TileBuilder, str]:
        seq, last_time = conn.execute(
            "SELECT seq, time FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone() or (-1, "")
        reader = ConnNodeReader(conn)
        return (
            MerkleFrontier.load(reader, seq + 1),
            TileBuilder.load(conn, seq + 1),
            last_time,
        )

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable("audit store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                uri = "file:" + urllib.parse.quote(str(self.path.resolve()))
                if self.read_only:
                    uri += "?mode=ro"
                conn = sqlite3.connect(
                    uri, uri=True, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
                )
                conn.execute("PRAGMA query_only=ON")
                conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()
                if self._version is None:
                    layout = read_layout(conn)
                    self._version, self._time_ordered = layout.version, layout.time_ordered
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit store unreadable: {exc}") from exc
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- appending -----------------------------------------------------------------
    def submit(self, kind: str, **fields: Any) -> Future[EventRecord]:
        """Queue one event; the future resolves with its record once it is durable."""
        req = AppendRequest.from_fields(kind, fields)
        fut: Future[EventRecord] = AppendFuture()
        req.future = fut
        self._enqueue(req)
        return fut

    async def append(self, kind: str, **fields: Any) -> EventRecord:
        """Append one event; returns once it is durable. Raises StoreUnavailable."""
        return await self.submit_async(kind, **fields)

    def submit_async(self, kind: str, **fields: Any) -> asyncio.Future[EventRecord]:
        """Queue one event from a coroutine or callback of the running event loop.

        Returns a future of that loop, resolved once the event is durable; the writer
        resolves all of a loop's futures of one group commit in one loop callback. For the
        event loop this is much cheaper than `submit` + `asyncio.wrap_future` (no
        concurrent Future, no cross-thread wake-up per event). Unlike a concurrent Future,
        `.result()` of a pending one raises `asyncio.InvalidStateError`: check `.done()`.
        """
        req = AppendRequest.from_fields(kind, fields)
        req.loop = asyncio.get_running_loop()
        req.waiter = req.loop.create_future()
        self._enqueue(req)
        return req.waiter

    def submit_seq(self, kind: str, session: str | None, identity: str | None,
                   connection: str | None, verdict: str | None, rule: str | None,
                   meta: dict[str, Any] | None, payload: bytes | None) -> asyncio.Future[int]:  # fmt: skip
        """`submit_async` for the gateway's per-statement events, every field given: the
        future resolves with the event's seq (not its record) once it is durable."""
        req = AppendRequest.make(kind, session, identity, connection, verdict, rule, meta, payload)
        req.seq_only = True
        req.loop = asyncio.get_running_loop()
        req.waiter = req.loop.create_future()  # type: ignore[assignment]
        self._enqueue(req)
        return req.waiter  # type: ignore[return-value]

    def submit_nowait(self, kind: str, session: str | None, identity: str | None,
                      connection: str | None, verdict: str | None, rule: str | None,
                      meta: dict[str, Any] | None, payload: bytes | None) -> bool:  # fmt: skip
        """Queue an event nobody waits for (a statement's result). It is written in order
        with everything queued before and after it; a failure to write it is logged (the
        statements that follow it fail closed on the same failure). False: not queued
        (the store is read-only or closed)."""
        req = AppendRequest.make(kind, session, identity, connection, verdict, rule, meta, payload)
        if self._writer is None:
            return False
        self._writer.submit(req)
        return True

    def _enqueue(self, req: AppendRequest) -> None:
        if self._writer is None:
            exc = StoreUnavailable("audit store opened read-only or closed")
            if req.future is not None and req.future.set_running_or_notify_cancel():
                req.future.set_exception(exc)
            if req.waiter is not None:
                req.waiter.set_exception(exc)
        else:
            self._writer.submit(req)

    def append_sync(self, kind: str, **fields: Any) -> EventRecord:
        """Blocking append for CLI processes and threads without an event loop."""
        return self.submit(kind, **fields).result()

    def transact(self, fn: Callable[[sqlite3.Connection, MerkleFrontier], T]) -> Future[T]:
        """Run `fn(conn, frontier)` on the writer thread in its own write transaction.

        For checkpoints and retention: it serialises with appends, and `frontier` is the
        committed tree at that instant (do not mutate it).
        """
        fut: Future[T] = Future()
        if self._writer is None:
            fut.set_running_or_notify_cancel()
            fut.set_exception(StoreUnavailable("audit store opened read-only or closed"))
        else:
            self._writer.submit(Job(fn, fut))
        return fut

    # -- reading -------------------------------------------------------------------
    def size(self) -> int:
        """Number of committed events (= tree size)."""
        if self._writer is not None and self._writer.alive:
            return self._writer.frontier.size
        row = self._reader().execute("SELECT max(seq) FROM events").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def events(
        self,
        *,
        identity: str | None = None,
        connection: str | None = None,
        session: str | None = None,
        verdict: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> Iterator[EventRecord]:
        """Events in seq order; `since` inclusive, `until` exclusive (ISO-8601 strings)."""
        conn = self._reader()
        where, args = [], []
        for col, val in (
            ("identity", identity),
            ("connection", connection),
            ("session", session),
            ("verdict", verdict),
            ("kind", kind),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        if after_seq is not None:
            where.append("seq > ?")
            args.append(after_seq)
        where += self._seq_bounds(conn, args, since=since, until=until, session=session)
        sql = f"SELECT {_EVENT_COLS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        cur = conn.execute(sql, args)
        memo = self._payload_seqs
        while rows := cur.fetchmany(1000):
            if len(memo) > 50_000:
                memo.clear()
            for row in rows:
                if row[8] is not None:
                    memo[row[8]] = row[0]
                yield _row_to_record(row)

    def _seq_bounds(
        self,
        conn: sqlite3.Connection,
        args: list[Any],
        *,
        since: str | None = None,
        until: str | None = None,
        session: str | None = None,
    ) -> list[str]:
        """Seq range conditions equivalent to the time and session filters (layout 3 has no
        index on either): time is in seq order, and a session starts with its session_start.
        They narrow the scan; the filters themselves stay in the query."""
        where: list[str] = []
        if self._version is None or self._version < 3:
            return where
        if self._time_ordered:
            if since is not None:
                where.append("seq >= ?")
                args.append(seq_at_time(conn, since))
            if until is not None:
                where.append("seq < ?")
                args.append(seq_at_time(conn, until))
        if session is not None:
            (first,) = conn.execute(
                "SELECT min(seq) FROM events WHERE kind = 'session_start' AND session = ?",
                (session,),
            ).fetchone()
            if first is not None:
                where.append("seq >= ?")
                args.append(first)
        return where

    def session_ids(self, prefix: str = "", *, limit: int = 2) -> list[str]:
        """Ids of sessions (by their session_start) that begin with `prefix`, in id order,
        at most `limit`: a range read of the session_start index, not a scan."""
        rows = self._reader().execute(
            "SELECT session FROM events WHERE kind = 'session_start' AND session >= ? "
            "AND session < ? ORDER BY session LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return [r[0] for r in rows if r[0].startswith(prefix)]

    def open_sessions(self) -> list[tuple[str, str | None, str | None]]:
        """(session, identity, connection) of every session_start with no session_end."""
        return (
            self._reader()
            .execute(
                "SELECT s.session, s.identity, s.connection FROM events s"
                " WHERE s.kind = 'session_start' AND s.session IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM events e WHERE e.session = s.session AND e.kind = 'session_end')"
                " ORDER BY s.seq"
            )
            .fetchall()
        )

    def event(self, seq: int) -> EventRecord | None:
        row = (
            self._reader()
            .execute(f"SELECT {_EVENT_COLS} FROM events WHERE seq = ?", (seq,))
            .fetchone()
        )
        if row is not None and row[8] is not None:
            if len(self._payload_seqs) > 50_000:
                self._payload_seqs.clear()
            self._payload_seqs[row[8]] = row[0]
        return None if row is None else _row_to_record(row)

    def payload(self, payload_hash: str) -> bytes | None:
        """The payload bytes, or None if absent or purged by retention.

        Fast for the hash of an event this store handed out (by its seq); any other hash
        costs a scan in layout 3 (`event_payload` takes the seq directly)."""
        conn = self._reader()
        version = self._version or SCHEMA_VERSION
        seq = self._payload_seqs.get(payload_hash)
        if seq is not None and version >= 3:
            found = payload_row(conn, version, seq, payload_hash)
            if found is not None and found[0] is not None:
                return found[0]
        found = payload_by_hash(conn, version, payload_hash)
        return None if found is None else found[0]

    def event_payload(self, seq: int, payload_hash: str) -> bytes | None:
        """The payload of event `seq` (whose body names `payload_hash`), or None if
        absent or purged: one point read in any layout."""
        found = payload_row(self._reader(), self._version or SCHEMA_VERSION, seq, payload_hash)
        return None if found is None else found[0]

    def sessions(
        self,
        *,
        identity: str | None = None,
        connection: str | None = None,
        since: str | None = None,
    ) -> list[SessionSummary]:
        """One summary per session_start matching the filters, in start order."""
        where, args = ["s.kind = 'session_start'", "s.session IS NOT NULL"], []
        if identity is not None:
            where.append("s.identity = ?")
            args.append(identity)
        if connection is not None:
            where.append("s.connection = ?")
            args.append(connection)
        if since is not None:
            where.append("s.time >= ?")
            args.append(since)
        conn = self._reader()
        if since is not None:  # a seq bound for the time bound (layout 3)
            where += self._seq_bounds(conn, args, since=since)
            where = [w.replace("seq", "s.seq") if w.startswith("seq") else w for w in where]
        # the statement counts of every listed session in one pass over the events from the
        # first listed session_start on (a session's events follow its session_start)
        sql = f"""
            WITH s AS MATERIALIZED (
              SELECT s.session, s.identity, s.connection, s.time, s.seq, s.meta FROM events s
              WHERE {" AND ".join(where)}),
            c AS (
              SELECT session, count(*) AS n,
                count(*) FILTER (WHERE verdict = 'allow') AS allowed,
                count(*) FILTER (WHERE verdict = 'deny') AS denied,
                count(*) FILTER (WHERE verdict = 'review') AS reviewed
              FROM events WHERE kind = 'command' AND seq >= (SELECT min(seq) FROM s)
                AND session IN (SELECT session FROM s)
              GROUP BY session)
            SELECT s.session, s.identity, s.connection, s.time, s.seq, s.meta,
              coalesce(c.n, 0), coalesce(c.allowed, 0), coalesce(c.denied, 0),
              coalesce(c.reviewed, 0),
              (SELECT e.time || char(10) || e.meta FROM events e
                 WHERE e.session = s.session AND e.kind = 'session_end' ORDER BY e.seq LIMIT 1)
            FROM s LEFT JOIN c ON c.session = s.session ORDER BY s.seq
        """
        out = []
        for (
            sess,
            ident,
            conn_name,
            started,
            seq,
            meta,
            n,
            allowed,
            denied,
            reviewed,
            end,
        ) in conn.execute(sql, args).fetchall():
            meta = json.loads(meta)
            ended = end_reason = None
            if end is not None:
                ended, end_meta = end.split("\n", 1)
                end_reason = json.loads(end_meta).get("reason")
            out.append(
                SessionSummary(
                    session=sess,
                    identity=ident,
                    connection=conn_name,
                    started=started,
                    start_seq=seq,
                    ended=ended,
                    end_reason=end_reason,
                    statements=n,
                    allowed=allowed,
                    denied=denied,
                    reviewed=reviewed,
                    client_addr=meta.get("client_addr"),
                    protocol=meta.get("protocol"),
                    application_name=meta.get("application_name"),
                    database=meta.get("database"),
                    meta=meta,
                )
            )
        return out

    # -- Merkle tree -----------------------------------------------------------------
    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """Stored complete-subtree hashes for `keys` (one query)."""
        conn = self._reader()
        return ConnNodeReader(conn, self._version, self._edge_tiles).get_nodes(keys)

    def root(self, size: int | None = None) -> bytes:
        """Tree root at `size` (default: now)."""
        size = self.size() if size is None else size
        return EMPTY_ROOT if size == 0 else root_at(self, size)

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self, seq, self.size() if size is None else size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(self, size1, self.size() if size2 is None else size2)

    # -- closing -------------------------------------------------------------------
    def close(self) -> None:
        """Flush pending appends, stop the writer, close connections. Idempotent."""
        if self._writer is not None:
            self._writer.close()
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._readers.clear()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ConnNodeReader = ConnNodeReader  # the name checkpoint.py and verify.py import
