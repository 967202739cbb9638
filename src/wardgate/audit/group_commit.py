"""The single writer thread of the SQLite audit store: group commit.

Theory of operation: callers (coroutines, engine threads, CLI processes) never touch the
write connection. They put a request on a queue and get a `concurrent.futures.Future`.
One thread owns the write connection. Each time it wakes it takes every request already
waiting (up to `MAX_BATCH`), gives the events consecutive seq numbers and one timestamp,
builds their canonical bodies and leaf hashes, extends the in-memory Merkle frontier and
edge tiles on a copy, and writes events, payloads and the tree tiles that changed in ONE
transaction, with multi-row INSERTs (the sqlite3 module releases the GIL per statement:
per row, the writer and the event loop would hand the GIL back and forth each row). Only
after COMMIT returns (with synchronous=FULL that is after the WAL fsync) are the futures
resolved, so "append returned" means "durable". If anything fails, the transaction is
rolled back, the frontier copy is thrown away (seq stays gapless) and every future in the
batch gets `StoreUnavailable`. A request may also be a callable (`Job`): it runs alone in
its own transaction, for checkpoints and retention, so those serialise with appends.

If the thread dies, or the store is closed, every waiting and later request fails at once:
nothing ever waits on a writer that is gone.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import _base as _futures_base
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring as _encode_str  # type: ignore[attr-defined]
from time import gmtime as _gmtime
from time import strftime as _strftime
from time import time_ns as _time_ns
from typing import Any

from wardgate.audit.layout import TileBuilder
from wardgate.audit.merkle import MerkleFrontier
from wardgate.audit.records import EventRecord, StoreUnavailable, make_record

__all__ = ["AppendFuture", "AppendRequest", "Job", "GroupCommitWriter", "utc_now", "MAX_BATCH"]

log = logging.getLogger("wardgate.audit")

MAX_BATCH = 16384  # events per group commit at most
_STOP = object()


def utc_now() -> str:
    """ISO-8601 UTC with microseconds and a Z, as in every event's `time`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_second: list[Any] = [None, ""]  # the last whole second formatted by _utc_now_fast


def _utc_now_fast() -> str:
    """`utc_now()`, with the date and time of day formatted once per second (the writer
    stamps every group commit: strftime on a datetime was ~3% of a small commit)."""
    sec, us = divmod(_time_ns() // 1000, 1_000_000)
    if sec != _second[0]:
        _second[1] = _strftime("%Y-%m-%dT%H:%M:%S.", _gmtime(sec))
        _second[0] = sec
    return f"{_second[1]}{us:06d}Z"


_META_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_FIELDS = frozenset({"session", "identity", "connection", "verdict", "rule"})
_sha256 = hashlib.sha256


_markers: dict[int, Any] = {}  # the C encoder's cycle check (empty between calls)
_c_encoder = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        _markers, _META_ENCODER.default, _encode_str, None, ":", ",", True, False, True
    )
)


def _encode_meta(meta: dict[str, Any]) -> str:
    """Canonical JSON of meta: `_META_ENCODER.encode`, without building a JSONEncoder
    iterator per call: the C encoder directly, one for every call (its only state is the
    cycle-check markers, empty again after each call; emptied here if a call fails)."""
    if _c_encoder is None:  # pragma: no cover - CPython always has it
        return _META_ENCODER.encode(meta)
    try:
        return "".join(_c_encoder(meta, 0))
    except BaseException:
        _markers.clear()
        raise


def _j(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is str:
        return _encode_str(value)
    return json.dumps(value, ensure_ascii=False)


@dataclass(slots=True)
class AppendRequest:
    """One event waiting for the writer, its body pre-encoded around seq and time.

    Completion goes to `future` (a concurrent Future: threads, CLI) or, for coroutines,
    to `waiter` on `loop`; the writer resolves waiters one loop callback per batch.
    """

    kind: str
    session: str | None
    identity: str | None
    connection: str | None
    verdict: str | None
    rule: str | None
    meta: dict[str, Any]
    meta_json: str  # canonical JSON of meta, computed (and validated) by the caller
    payload: bytes | None
    payload_hash: str | None
    head: bytes  # canonical body up to and including '"seq":'
    mid: bytes  # ',"session":...,"time":'
    tail: bytes  # ',"verdict":...}'
    future: Future[EventRecord] | None = None
    waiter: asyncio.Future[EventRecord] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    seq_only: bool = False  # the future or waiter gets the event's seq, not its record

    @classmethod
    def build(cls, kind: str, **kw: Any) -> AppendRequest:
        return cls.from_fields(kind, kw)

    @classmethod
    def make(cls, kind: str, session: str | None, identity: str | None,
             connection: str | None, verdict: str | None, rule: str | None,
             meta: dict[str, Any] | None, payload: bytes | None) -> AppendRequest:  # fmt: skip
        """`build` with every field given (None where absent), no keyword dict: the
        gateway's per-statement events. `meta` is the caller's to give up (not copied)."""
        for v in (kind, session, identity, connection, verdict, rule):
            if v is not None and type(v) is not str:  # not the gateway's: the general path
                return cls.from_fields(kind, {
                    "session": session, "identity": identity, "connection": connection,
                    "verdict": verdict, "rule": rule, "meta": meta, "payload": payload,
                })  # fmt: skip
        if meta is None:
            meta = {}
        elif type(meta) is not dict:
            meta = dict(meta)
        meta_json = _encode_meta(meta)
        if payload is None:
            payload_hash = None
        elif type(payload) is bytes:
            payload_hash = _sha256(payload).hexdigest()
        elif isinstance(payload, bytearray | memoryview):
            payload = bytes(payload)
            payload_hash = _sha256(payload).hexdigest()
        else:
            raise TypeError("payload must be bytes")
        # see from_fields: the same splice, fields known to be str or None
        s = _encode_str
        head = (
            f'{{"connection":{"null" if connection is None else s(connection)},'
            f'"identity":{"null" if identity is None else s(identity)},'
            f'"kind":{s(kind)},"meta":{meta_json},'
            f'"payload_hash":{"null" if payload_hash is None else s(payload_hash)},'
            f'"rule":{"null" if rule is None else s(rule)},"seq":'
        ).encode()
        mid = f',"session":{"null" if session is None else s(session)},"time":'.encode()
        tail = f',"verdict":{"null" if verdict is None else s(verdict)}}}'.encode()
        return cls(
            kind, session, identity, connection, verdict, rule, meta, meta_json, payload,
            payload_hash, head, mid, tail,
        )  # fmt: skip

    @classmethod
    def from_fields(cls, kind: str, kw: dict[str, Any]) -> AppendRequest:
        """`build` over a dict the caller gives up (it is consumed)."""
        meta = kw.pop("meta", None)
        meta = dict(meta) if meta else {}
        payload = kw.pop("payload", None)
        if not _FIELDS.issuperset(kw):
            raise TypeError(f"unknown event fields: {sorted(set(kw) - _FIELDS)}")
        meta_json = _encode_meta(meta)
        if payload is None:
            payload_hash = None
        elif isinstance(payload, bytes | bytearray | memoryview):
            payload = bytes(payload)
            payload_hash = _sha256(payload).hexdigest()
        else:
            raise TypeError("payload must be bytes")
        get = kw.get
        session, identity, connection = get("session"), get("identity"), get("connection")
        verdict, rule = get("verdict"), get("rule")
        # Canonical JSON spliced in sorted key order; equal to canonical.event_body(...)
        # (tests/audit/test_store.py checks it), with seq and time filled in by the writer.
        head = (
            f'{{"connection":{_j(connection)},"identity":{_j(identity)},'
            f'"kind":{_j(kind)},"meta":{meta_json},'
            f'"payload_hash":{_j(payload_hash)},"rule":{_j(rule)},"seq":'
        ).encode()
        mid = f',"session":{_j(session)},"time":'.encode()
        tail = f',"verdict":{_j(verdict)}}}'.encode()
        return cls(
            kind, session, identity, connection, verdict, rule, meta, meta_json, payload,
            payload_hash, head, mid, tail,
        )  # fmt: skip

    def body(self, seq: int, time_json: bytes) -> bytes:
        return b"".join((self.head, str(seq).encode(), self.mid, time_json, self.tail))


_ROWS = 64  # rows per multi-row INSERT statement (12 * 64 parameters, far below the limit)


@functools.lru_cache(maxsize=512)
def _insert_sql(table: str, ncols: int, nrows: int) -> str:
    row = "(" + ",".join("?" * ncols) + ")"
    return f"INSERT INTO {table} VALUES " + ",".join([row] * nrows)


def _insert_rows(conn: sqlite3.Cursor, table: str, ncols: int, flat: list[Any]) -> None:
    """Insert rows given as one flat parameter list, _ROWS rows per statement."""
    step = ncols * _ROWS
    full = len(flat) - len(flat) % step
    if full:
        sql = _insert_sql(table, ncols, _ROWS)
        for i in range(0, full, step):
            conn.execute(sql, flat[i : i + step])
    if full < len(flat):
        conn.execute(_insert_sql(table, ncols, (len(flat) - full) // ncols), flat[full:])


class _Condition(threading.Condition):
    """`threading.Condition` over an RLock, minus the five bound methods its __init__
    stores per instance: the same methods at class level. A Future holds one, and an
    append makes one Future: this halves the objects the garbage collector tracks per
    queued event (and what it costs to make them)."""

    def __init__(self) -> None:  # noqa: D107 - deliberately not calling super().__init__
        self._lock = threading.RLock()
        self._waiters = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:  # type: ignore[override]
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:  # type: ignore[override]
        self._lock.release()

    def _release_save(self) -> Any:
        return self._lock._release_save()  # type: ignore[attr-defined]

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)  # type: ignore[attr-defined]

    def _is_owned(self) -> bool:
        return self._lock._is_owned()  # type: ignore[attr-defined]


_DONE_STATES = frozenset(
    {_futures_base.CANCELLED, _futures_base.CANCELLED_AND_NOTIFIED, _futures_base.FINISHED}
)


class AppendFuture(Future):  # type: ignore[type-arg]
    """The `concurrent.futures.Future` `AuditStore.submit` returns (a subclass, same
    behaviour) with the lighter condition above."""

    def __init__(self) -> None:  # same fields as Future.__init__
        self._condition = _Condition()
        self._state = _futures_base.PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []

    def set_result(self, result: Any) -> None:
        """Future.set_result, minus waking a condition no thread waits on (the writer
        resolves one future per event; most have no waiter yet, or a callback)."""
        with self._condition._lock:
            if self._state in _DONE_STATES:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = _futures_base.FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            if self._condition._waiters:
                self._condition.notify_all()
        if self._done_callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]


def _resolve(pairs: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for waiter, result, exc in pairs:
        if waiter.done():
            continue
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(result)


def _settle(fut: Future[Any], result: Any, exc: BaseException | None) -> None:
    """Resolve a concurrent future unless its owner already cancelled it."""
    if not fut.set_running_or_notify_cancel():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _complete(items: Sequence[AppendRequest | Job], results: Sequence[Any] | None,
              exc: BaseException | None) -> None:  # fmt: skip
    """Resolve every request of a batch: futures directly, waiters one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    if results is None:
        results = [None] * len(items)
    for req, result in zip(items, results, strict=True):
        fut = req.future
        if fut is not None and exc is None:
            # one lock round trip instead of two: set_result refuses a cancelled future,
            # and only then is the cancellation acknowledged (for concurrent.futures.wait)
            try:
                fut.set_result(result)
            except InvalidStateError:
                fut.set_running_or_notify_cancel()
        elif fut is not None:
            _settle(fut, result, exc)
        elif (waiter := getattr(req, "waiter", None)) is not None and req.loop is not None:
            by_loop.setdefault(req.loop, []).append((waiter, result, exc))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, pairs)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass


def _log_unanswered(batch: Sequence[AppendRequest], exc: BaseException) -> None:
    """Events nobody waits for (`submit_nowait`) that could not be written: said here,
    since no caller hears of it (the statements after them fail closed on their own)."""
    lost = sum(1 for r in batch if r.future is None and r.waiter is None)
    if lost:
        log.error("%s: %d event(s) nobody waits for were not written", exc, lost)


@dataclass(slots=True)
class Job:
    """Run `fn(conn, frontier)` alone in a write transaction on the writer thread."""

    fn: Callable[[sqlite3.Connection, MerkleFrontier], Any]
    future: Future[Any]


class GroupCommitWriter:
    """Owns the write connection and the Merkle frontier; see the module docstring.

    Two ways to run it: `start` (its own thread takes requests off the queue), or
    `start_inline` (the caller's thread drives it: `commit` a batch it collected itself,
    `run_queued` when `wake` said that another thread queued a job; the audit writer
    process does this, so a batch needs no hand-off between threads)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._dead = False
        self._lock = threading.Lock()
        self.frontier = MerkleFrontier()
        self.tiles = TileBuilder()
        self._last_time = ""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None  # inline mode only
        self._driver: int | None = None  # inline mode: the driving thread's ident
        self._wake: Callable[[], None] | None = None
        self._cursor: sqlite3.Cursor | None = None  # _write's, on the write connection

    # -- lifecycle -----------------------------------------------------------------
    def start(
        self, load: Callable[[sqlite3.Connection], tuple[MerkleFrontier, TileBuilder, str]]
    ) -> None:
        self._load = load
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise StoreUnavailable(f"audit store cannot be opened: {self._startup_error}")

    def start_inline(
        self,
        load: Callable[[sqlite3.Connection], tuple[MerkleFrontier, TileBuilder, str]],
        wake: Callable[[], None],
    ) -> None:
        """Open on this thread, which then drives the writer; `wake()` is called (from any
        thread) when a request was queued for `run_queued`."""
        self._load = load
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            self.frontier, self.tiles, self._last_time = load(conn)
        except BaseException as exc:  # noqa: BLE001
            self._dead = True
            if conn is not None:
                conn.close()
            raise StoreUnavailable(f"audit store cannot be opened: {exc}") from exc
        self._conn = conn
        self._driver = threading.get_ident()
        self._wake = wake

    def close(self) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = True
            if self._driver is None:
                self._queue.put(_STOP)
        if self._driver is None:
            self._thread.join()
            return
        # inline: called by the driving thread, which committed what it had
        self._fail_pending()
        if self._conn is not None:
            self._conn.close()

    @property
    def alive(self) -> bool:
        return not self._dead

    # -- submission ----------------------------------------------------------------
    def submit(self, item: AppendRequest | Job) -> None:
        with self._lock:
            if self._dead:
                _complete([item], None, StoreUnavailable("audit store is closed"))
                return
            if self._driver is None:
                self._queue.put(item)
                return
            if self._driver == threading.get_ident() and isinstance(item, Job):
                # the driving thread itself (a final checkpoint at close): run it now,
                # it would otherwise wait for itself
                self._run_job(self._conn, item)  # type: ignore[arg-type]
                return
            self._queue.put(item)
        self._wake()  # type: ignore[misc]

    # -- inline mode ---------------------------------------------------------------
    def commit(self, batch: list[AppendRequest]) -> tuple[int, str, list[bytes]]:
        """Inline mode: write `batch` in one transaction; (first seq, time, bodies) once
        COMMIT returned. Raises StoreUnavailable (nothing written) on any failure. The
        requests' futures are not touched: the caller answers for them."""
        return self._write(self._conn, batch)  # type: ignore[arg-type]

    def run_queued(self) -> None:
        """Inline mode: run what other threads queued (jobs, appends), in order."""
        batch: list[AppendRequest] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Job):
                self._commit_appends(self._conn, batch)  # type: ignore[arg-type]
                batch = []
                self._run_job(self._conn, item)  # type: ignore[arg-type]
            elif item is not _STOP:
                batch.append(item)
        self._commit_appends(self._conn, batch)  # type: ignore[arg-type]

    # -- the thread ----------------------------------------------------------------
    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            self.frontier, self.tiles, self._last_time = self._load(conn)
        except BaseException as exc:  # noqa: BLE001 - reported to open()
            self._startup_error = exc
            self._dead = True
            self._ready.set()
            if conn is not None:
                conn.close()
            return
        self._ready.set()
        try:
            stop = False
            while not stop:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch: list[AppendRequest] = []
                while True:
                    if isinstance(item, Job):
                        self._commit_appends(conn, batch)
                        batch = []
                        self._run_job(conn, item)
                    else:
                        batch.append(item)
                    if len(batch) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                self._commit_appends(conn, batch)
        finally:
            with self._lock:
                self._dead = True
            self._fail_pending()
            conn.close()

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _complete([item], None, StoreUnavailable("audit store is closed"))

    def _next_time(self) -> str:
        now = _utc_now_fast()
        if now < self._last_time:  # clock stepped back: keep time monotonic in seq
            now = self._last_time
        self._last_time = now
        return now

    def _refresh(self, conn: sqlite3.Connection | sqlite3.Cursor) -> None:
        """Inside the write transaction: catch up with events another process appended.

        The CLI (an approval decided from a shell, a retention purge) appends to the same
        file while the gateway runs; BEGIN IMMEDIATE serialises the writers, and this
        reloads the frontier when the log grew behind this writer's back.
        """
        # data_version moves only when ANOTHER connection committed: the common case
        # (nobody else wrote) costs one pragma, not a query on the events table
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if version == getattr(self, "_data_version", None):
            return
        self._data_version = version
        (top,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        size = 0 if top is None else top + 1
        if size != self.frontier.size:
            if isinstance(conn, sqlite3.Cursor):
                conn = conn.connection
            self.frontier, self.tiles, last_time = self._load(conn)
            if last_time > self._last_time:
                self._last_time = last_time

    def _commit_appends(self, conn: sqlite3.Connection, batch: list[AppendRequest]) -> None:
        if not batch:
            return
        try:
            seq, time, bodies = self._write(conn, batch)
        except StoreUnavailable as exc:
            _log_unanswered(batch, exc)
            _complete(batch, None, exc)
            return
        results: list[Any] = []
        for req, body in zip(batch, bodies, strict=True):
            if req.seq_only:
                results.append(seq)
            elif req.future is not None or req.waiter is not None:
                results.append(
                    make_record(seq, time, req.session, req.identity, req.connection, req.kind,
                                req.verdict, req.rule, req.payload_hash, req.meta, body)
                )  # fmt: skip
            else:
                results.append(None)
            seq += 1
        _complete(batch, results, None)

    def _write(self, conn: sqlite3.Connection, batch: list[AppendRequest]) -> tuple[int, str, list[bytes]]:  # fmt: skip
        """One transaction for the batch: (first seq, time, bodies) once committed, or
        StoreUnavailable with everything rolled back (frontier and seq as before)."""
        cur = self._cursor
        if cur is None or cur.connection is not conn:
            # one cursor for every commit: conn.execute makes (and drops) one per call
            cur = self._cursor = conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            self._refresh(cur)
            frontier, tiles = self.frontier.copy(), self.tiles.copy()
            time = self._next_time()
            time_json = f'"{time}"'.encode()
            # flat parameter lists for multi-row INSERTs: one SQLite statement (and one
            # GIL release) per _ROWS rows, not per row
            events: list[Any] = []
            payloads: list[Any] = []
            nodes: list[Any] = []
            bodies: list[bytes] = []
            first = seq = frontier.size
            append, sha256, join = frontier.append_flat, hashlib.sha256, b"".join
            for req in batch:
                body = join((req.head, str(seq).encode(), req.mid, time_json, req.tail))
                leaf = sha256(b"\x00" + body).digest()
                append(leaf, nodes)
                # blobs go in as bytearray: the sqlite3 module binds those directly, while
                # each bytes value takes a failed adapter lookup first (~3k instructions)
                events += (seq, time, req.session, req.identity, req.connection, req.kind,
                           req.verdict, req.rule, req.payload_hash, req.meta_json,
                           bytearray(body), bytearray(leaf))  # fmt: skip
                if req.payload is not None:
                    payloads += (seq, req.payload_hash, bytearray(req.payload))
                bodies.append(body)
                seq += 1
            _insert_rows(cur, "events", 12, events)
            _insert_rows(cur, "payload_rows(seq, hash, data)", 3, payloads)
            tiles.add_flat(nodes)
            written = tiles.take_dirty()
            if written:
                cur.executemany(
                    "INSERT OR REPLACE INTO tiles(level, idx, hashes) VALUES (?,?,?)", written
                )
            cur.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - every failure means "not durable"
            self._rollback(conn)
            raise StoreUnavailable(f"audit store write failed: {exc}") from exc
        self.frontier, self.tiles = frontier, tiles
        return first, time, bodies

    def _run_job(self, conn: sqlite3.Connection, job: Job) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._refresh(conn)
            result = job.fn(conn, self.frontier)
            conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                exc = StoreUnavailable(f"audit store write failed: {exc}")
            _settle(job.future, None, exc)
            return
        _settle(job.future, result, None)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
