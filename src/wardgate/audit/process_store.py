"""`ProcessAuditStore`: the gateway's side of an audit writer in its own process.

Theory of operation: with `audit: {writer: process}` the gateway does not run the store's
writer thread (hashing, SQLite, fsync, checkpoints) on its own interpreter, where it would
share one interpreter lock with the event loop; writer_process.py runs it in a child
process on another core. This class keeps the `AuditStore` interface the gateway uses:

- appends (`submit_async`, `append`, `submit`, `append_sync`) travel over a socketpair
  (writer_link.py) and resolve when the child answers, which it does only once the event
  is durable. Requests made in one loop turn leave in one frame. The gateway's
  per-statement events take two lighter paths: `submit_seq` (a command event: its
  future resolves with the seq alone) and `submit_nowait` (a result event: no future,
  no reply, nothing kept here; it is written in order with the rest).
- reads (events, payloads, proofs, size) are this process's own read connections on the
  same SQLite file, as in thread mode: WAL lets them run beside the child's writer.
- `transact` (callables on the writer's connection) is not available: checkpoints run in
  the child. Retention and the CLI open their own store, as always.

If the child dies, every pending and later append fails with `StoreUnavailable` and the
gateway fails closed, as when the writer thread dies in thread mode; then a new writer
process is started (back-off from 0.2 s to 30 s) and appends work again once it is
ready. A store attached to a writer it did not start (a worker of `serve --workers N`)
leaves that to its supervisor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from wardgate.audit.records import EventRecord, StoreUnavailable, make_record
from wardgate.audit.store import AuditStore, parse_store_url
from wardgate.audit.writer_link import (
    NO_REPLY,
    RECORD_REPLY,
    SEQ_REPLY,
    FrameReader,
    encode,
)

__all__ = ["ProcessAuditStore", "spawn_writer", "NOWAIT_DELAY"]

T = TypeVar("T")
log = logging.getLogger("wardgate.audit")

_FIELDS = frozenset({"session", "identity", "connection", "verdict", "rule", "meta", "payload"})
_ERRORS: dict[str, type[Exception]] = {"TypeError": TypeError, "ValueError": ValueError}
_START_TIMEOUT = 60.0
# how long a submit_nowait event may wait for a frame to ride with (the writer then holds
# a batch of result events only for LINGER_SECONDS more, for the next command's commit)
NOWAIT_DELAY = 0.005
_CLOSE_TIMEOUT = 60.0
# result events kept while the writer is down, written first by the next one (a bound:
# while down every new statement is refused, so only statements already running add)
_KEPT_RESULTS_MAX = 10_000


class _Link(asyncio.Protocol):
    def __init__(self, owner: ProcessAuditStore) -> None:
        self.owner = owner
        self.reader = FrameReader(owner._on_message)

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except Exception as exc:  # noqa: BLE001 - a broken link is a dead writer
            self.owner._fail_all(f"unreadable reply from the audit writer process: {exc}")
            transport = self.owner._transport
            if transport is not None:
                transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost()


class ProcessAuditStore(AuditStore):
    """See the module docstring. Make one with `await ProcessAuditStore.start(...)`."""

    # submit_nowait events wait for company (the next frame here, the next commit in the
    # writer): callers need not hold result events back for the next command themselves
    nowait_waits_for_company = True

    def __init__(self, path: Path, durability: str) -> None:
        super().__init__(path, durability, read_only=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._transport: asyncio.Transport | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # rid -> future of a request answered with its seq (submit_seq), or with what
        # makes its record (submit_async, submit): (future, kind, fields)
        self._pending: dict[int, Any] = {}
        self._pending_records: dict[int, tuple[Any, str, dict[str, Any]]] = {}
        self._out: list[tuple[Any, ...]] = []  # requests of this loop turn (writer_link)
        self._flush_scheduled = False
        self._nowait_timer: asyncio.TimerHandle | None = None
        self._nowait_since: float | None = None  # loop time of the oldest one in _out
        self._next_rid = 0
        self._kept_results: list[tuple[Any, ...]] = []  # see _KEPT_RESULTS_MAX
        self._dead: str | None = None  # why appends fail, once they do
        self._ready: asyncio.Future[int] | None = None
        self._bye: asyncio.Future[None] | None = None
        self._size_at_start = 0
        self._closing = False
        self._spawn: dict[str, Any] | None = None  # spawn_writer arguments, if we own it
        self._restarting: asyncio.Task[None] | None = None

    # -- starting ------------------------------------------------------------------
    @classmethod
    async def start(
        cls,
        url: str | Path,
        *,
        durability: str = "full",
        checkpoints: dict[str, Any] | None = None,
        log_level: str = "INFO",
    ) -> ProcessAuditStore:
        """Start the writer process on `url` and wait until its store is open.

        `checkpoints`: {key_file, origin, interval, publish} for the child's checkpointer,
        or None for none. Raises StoreUnavailable if the store cannot be opened.
        """
        path = parse_store_url(url)
        spawn = {"durability": durability, "checkpoints": checkpoints, "log_level": log_level}
        proc, (ours,) = spawn_writer(path, **spawn)
        store = await cls.attach(ours, path, durability=durability, proc=proc)
        store._spawn = spawn  # this store owns its writer: it restarts it if it dies
        return store

    @classmethod
    async def attach(
        cls,
        sock: socket.socket,
        url: str | Path,
        *,
        durability: str = "full",
        proc: subprocess.Popen[bytes] | None = None,
    ) -> ProcessAuditStore:
        """Use a writer process already started (`spawn_writer`) through `sock`, one of
        its links; `proc` only if this store owns (and reaps) that process."""
        store = cls(parse_store_url(url), durability)
        store._loop = asyncio.get_running_loop()
        store._loop_thread = threading.get_ident()
        await store._connect(sock, proc)
        return store

    async def _connect(self, sock: socket.socket, proc: subprocess.Popen[bytes] | None) -> None:
        loop = self._loop
        assert loop is not None
        self._ready = loop.create_future()
        self._bye = loop.create_future()
        self._proc = proc
        transport, _ = await loop.create_connection(lambda: _Link(self), sock=sock)
        self._transport = transport  # type: ignore[assignment]
        try:
            self._size_at_start = await asyncio.wait_for(self._ready, _START_TIMEOUT)
        except (StoreUnavailable, TimeoutError) as exc:
            transport.close()
            await asyncio.to_thread(self._reap, 10)
            if isinstance(exc, TimeoutError):
                raise StoreUnavailable("the audit writer process did not start in time") from exc
            raise

    async def _restart(self) -> None:
        """The writer died: start a new one, with back-off, until it runs or we close.

        Appends fail (statements are refused) from the moment the old one was lost until
        the new one answered "ready"; nothing is forwarded without its event meanwhile."""
        delay = 0.2
        while not self._closing and not self._closed:
            await asyncio.sleep(delay)
            if self._closing or self._closed:
                return
            try:
                await asyncio.to_thread(self._reap, _CLOSE_TIMEOUT)
                proc, (sock,) = spawn_writer(self.path, **self._spawn)  # type: ignore[arg-type]
                await self._connect(sock, proc)
            except (StoreUnavailable, OSError) as exc:
                log.error("audit writer process could not be restarted: %s", exc)
                delay = min(delay * 2, 30.0)
                continue
            self._dead = None
            log.warning("audit writer process restarted (pid %s)", proc.pid)
            if self._kept_results:  # results of statements that ran meanwhile: first
                log.warning(
                    "writing %d result events kept while the writer was down",
                    len(self._kept_results),
                )
                self._out[:0] = self._kept_results
                self._kept_results = []
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._loop.call_soon(self._flush)  # type: ignore[union-attr]
            return

    # -- replies -------------------------------------------------------------------
    def _on_message(self, message: tuple[Any, ...]) -> None:
        op = message[0]
        if op == "done":
            _, time, seqs, records = message
            if seqs:
                pop = self._pending.pop
                for i in range(0, len(seqs), 2):
                    fut = pop(seqs[i], None)
                    if fut is not None and not fut.done():
                        fut.set_result(seqs[i + 1])
            for rid, seq, payload_hash, body in records:
                entry = self._pending_records.pop(rid, None)
                if entry is None:
                    continue
                fut, kind, f = entry
                get = f.get
                rec = make_record(
                    seq, time, get("session"), get("identity"), get("connection"), kind,
                    get("verdict"), get("rule"), payload_hash, get("meta") or {}, body,
                )  # fmt: skip
                _set_result(fut, rec)
        elif op == "error":
            for rid, name, text in message[1]:
                fut = self._pending.pop(rid, None)
                if fut is None:
                    entry = self._pending_records.pop(rid, None)
                    fut = None if entry is None else entry[0]
                if fut is not None:
                    _set_exception(fut, _ERRORS.get(name, StoreUnavailable)(text))
        elif op == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(message[1])
        elif op == "failed":
            self._dead = message[1]
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(StoreUnavailable(message[1]))
        elif op == "bye":
            if self._bye is not None and not self._bye.done():
                self._bye.set_result(None)

    def _lost(self) -> None:
        self._transport = None
        self._fail_all("the audit writer process exited")
        loop = self._loop
        if loop is not None and not self._closing and not loop.is_closed():
            if self._spawn is not None:
                if self._restarting is None or self._restarting.done():
                    self._restarting = loop.create_task(self._restart())
            elif self._proc is not None:
                # reap it now (no zombie while the gateway goes on refusing statements)
                loop.run_in_executor(None, self._reap, _CLOSE_TIMEOUT)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(StoreUnavailable(self._dead or "writer exited"))
        if self._bye is not None and not self._bye.done():
            self._bye.set_result(None)

    def _fail_all(self, why: str) -> None:
        if self._dead is None:
            self._dead = why
            if not self._closed and not self._closing:
                log.error("audit store unavailable: %s", why)
        pending, self._pending = self._pending, {}
        records, self._pending_records = self._pending_records, {}
        # result events not yet sent are kept for the next writer (their statements ran;
        # a result the dead writer had received but not committed is lost)
        self._keep_results(e for e in self._out if e[1] == NO_REPLY)
        self._out.clear()
        self._nowait_since = None
        for fut in pending.values():
            _set_exception(fut, StoreUnavailable(why))
        for fut, _, _ in records.values():
            _set_exception(fut, StoreUnavailable(why))

    def _keep_results(self, entries: Any) -> bool:
        room = _KEPT_RESULTS_MAX - len(self._kept_results)
        entries = list(entries)
        self._kept_results.extend(entries[:room])
        if len(entries) > room:
            log.error("%d result events lost: the audit writer is down", len(entries) - room)
            return False
        return True

    # -- appending -----------------------------------------------------------------
    def submit_seq(self, kind: str, session: str | None, identity: str | None,
                   connection: str | None, verdict: str | None, rule: str | None,
                   meta: dict[str, Any] | None, payload: bytes | None) -> asyncio.Future[int]:  # fmt: skip
        """From the event loop thread: queue one event (every field given, as the gateway's
        per-statement events have them); the future resolves with its seq once durable."""
        fut: asyncio.Future[int] = self._loop.create_future()  # type: ignore[union-attr]
        if self._dead is not None or self._closed:
            fut.set_exception(StoreUnavailable(self._dead or "audit store is closed"))
            return fut
        if payload is not None and type(payload) is not bytes:
            raise TypeError("payload must be bytes")
        rid = self._next_rid
        self._next_rid = rid + 1
        self._pending[rid] = fut
        self._out.append(
            (rid, SEQ_REPLY, kind, session, identity, connection, verdict, rule, meta, payload)
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        return fut

    def submit_nowait(self, kind: str, session: str | None, identity: str | None,
                      connection: str | None, verdict: str | None, rule: str | None,
                      meta: dict[str, Any] | None, payload: bytes | None) -> bool:  # fmt: skip
        """From the event loop thread: queue an event nobody waits for (a statement's
        result): no reply comes back for it. It is written in order with what this store
        sent before and after it (so before a later session_end); if its group commit
        fails the writer logs it, as it fails every waited-for event of that commit.
        While the writer process is down it is kept (bounded) and written first by the
        next one. Returns False if it could not be kept (store closed, or the bound)."""
        if self._closed:
            return False
        if self._dead is not None:
            entry = (-1, NO_REPLY, kind, session, identity, connection, verdict, rule, meta,
                     payload)  # fmt: skip
            return self._keep_results((entry,))
        if payload is not None and type(payload) is not bytes:
            raise TypeError("payload must be bytes")
        self._out.append(
            (-1, NO_REPLY, kind, session, identity, connection, verdict, rule, meta, payload)
        )
        # no frame of its own: it leaves with the next one (a command of any session), or
        # at most NOWAIT_DELAY later; one timer for the store, never cancelled (a timer
        # per event, or per session, cost more than the frame it might save)
        if self._nowait_since is None:
            self._nowait_since = self._loop.time()  # type: ignore[union-attr]
            if not self._flush_scheduled and self._nowait_timer is None:
                self._nowait_timer = self._loop.call_later(NOWAIT_DELAY, self._nowait_due)  # type: ignore[union-attr]
        return True

    def _nowait_due(self) -> None:
        self._nowait_timer = None
        since = self._nowait_since
        if since is None:  # they left with a frame meanwhile
            return
        wait = since + NOWAIT_DELAY - self._loop.time()  # type: ignore[union-attr]
        if wait > 0:  # the oldest waiting came after this timer was set: its own delay
            self._nowait_timer = self._loop.call_later(wait, self._nowait_due)  # type: ignore[union-attr]
            return
        self._flush()

    def submit_async(self, kind: str, **fields: Any) -> asyncio.Future[EventRecord]:
        """Queue one event from the event loop thread; resolves once it is durable."""
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[EventRecord] = loop.create_future()
        self._queue(fut, kind, fields)
        return fut

    def _queue(self, fut: Any, kind: str, fields: dict[str, Any]) -> None:
        if self._dead is not None or self._closed:
            _set_exception(fut, StoreUnavailable(self._dead or "audit store is closed"))
            return
        if not _FIELDS.issuperset(fields):
            raise TypeError(f"unknown event fields: {sorted(set(fields) - _FIELDS)}")
        payload = fields.get("payload")
        if payload is not None and type(payload) is not bytes:
            if not isinstance(payload, bytearray | memoryview):
                raise TypeError("payload must be bytes")
            fields["payload"] = bytes(payload)
        rid = self._next_rid
        self._next_rid = rid + 1
        self._pending_records[rid] = (fut, kind, fields)
        get = fields.get
        self._out.append(
            (rid, RECORD_REPLY, kind, get("session"), get("identity"), get("connection"),
             get("verdict"), get("rule"), get("meta"), get("payload"))
        )  # fmt: skip
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._nowait_since = None
        if not self._out:
            return
        out, self._out = self._out, []
        transport = self._transport
        if transport is None:
            self._fail_all(self._dead or "the audit writer process exited")
            return
        try:
            frame = encode(("append", out))
        except TypeError:
            frame = self._encode_each(out)
        transport.write(frame)

    def _encode_each(self, out: list[tuple[Any, ...]]) -> bytes:
        """A frame that cannot be encoded whole: the events that cannot be sent fail with
        TypeError (as a bad field does), the others leave."""
        ok = []
        for item in out:
            try:
                encode(("append", [item]))
            except TypeError as exc:
                fut = self._pending.pop(item[0], None)
                if fut is None:
                    entry = self._pending_records.pop(item[0], None)
                    fut = None if entry is None else entry[0]
                if fut is not None:
                    _set_exception(fut, exc)
                else:
                    log.error("an audit event could not be sent to the writer: %s", exc)
                continue
            ok.append(item)
        return encode(("append", ok))

    def submit(self, kind: str, **fields: Any) -> concurrent.futures.Future[EventRecord]:
        """Queue one event from any thread; a concurrent Future resolved once durable."""
        cf: concurrent.futures.Future[EventRecord] = concurrent.futures.Future()
        cf.set_running_or_notify_cancel()
        if self._on_loop_thread():
            self._queue(cf, kind, fields)
            return cf
        loop = self._loop
        if loop is None or loop.is_closed() or self._dead is not None or self._closed:
            cf.set_exception(StoreUnavailable(self._dead or "audit store is closed"))
            return cf

        def queue() -> None:
            try:
                self._queue(cf, kind, fields)
            except Exception as exc:  # noqa: BLE001 - bad fields: the caller's future
                _set_exception(cf, exc)

        try:
            loop.call_soon_threadsafe(queue)
        except RuntimeError:  # loop closed meanwhile
            cf.set_exception(StoreUnavailable("audit store is closed"))
        return cf

    def append_sync(self, kind: str, **fields: Any) -> EventRecord:
        if self._on_loop_thread():
            raise RuntimeError(
                "append_sync on the event loop thread would wait for itself; use await append()"
            )
        return self.submit(kind, **fields).result()

    def transact(self, fn: Callable[..., T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()
        fut.set_exception(
            StoreUnavailable("write transactions run in the audit writer process, not here")
        )
        return fut

    def _on_loop_thread(self) -> bool:
        return self._loop_thread == threading.get_ident()

    @property
    def alive(self) -> bool:
        return self._dead is None and not self._closed

    # -- reading -------------------------------------------------------------------
    def size(self) -> int:
        row = self._reader().execute("SELECT max(seq) FROM events").fetchone()
        return 0 if row[0] is None else row[0] + 1

    # -- closing -------------------------------------------------------------------
    async def aclose(self) -> None:
        """Flush, let the child finish its appends and sign its final checkpoint, reap it."""
        if self._closed:
            return
        self._closing = True
        if self._restarting is not None and not self._restarting.done():
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restarting
        self._flush()
        if self._transport is not None:
            self._transport.write(encode(("close",)))
            try:
                await asyncio.wait_for(asyncio.shield(self._bye), _CLOSE_TIMEOUT)  # type: ignore[arg-type]
            except TimeoutError:
                log.error("audit writer process did not finish in time; stopping it")
            if self._transport is not None:
                self._transport.close()
        await asyncio.to_thread(self._reap, _CLOSE_TIMEOUT)
        self._fail_all("audit store is closed")
        if self._kept_results:  # the writer never came back before the gateway stopped
            log.error(
                "%d result events lost: the audit writer was down until the gateway stopped",
                len(self._kept_results),
            )
            self._kept_results = []
        super().close()

    def close(self) -> None:
        """Blocking close: from a thread other than the loop's (or with the loop gone)."""
        if self._closed:
            return
        loop = self._loop
        if loop is not None and loop.is_running() and not self._on_loop_thread():
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result()
            return
        if self._transport is not None:
            self._transport.close()
        self._reap(_CLOSE_TIMEOUT)
        self._fail_all("audit store is closed")
        super().close()

    def _reap(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0 and not self._closing:
            log.error("audit writer process exited with status %s", code)

    @property
    def writer_pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid


def spawn_writer(
    path: Path,
    *,
    durability: str = "full",
    checkpoints: dict[str, Any] | None = None,
    log_level: str = "INFO",
    links: int = 1,
) -> tuple[subprocess.Popen[bytes], list[socket.socket]]:
    """Start the writer process with `links` socketpairs; returns it and our ends.

    fork + exec is quick: callers on an event loop need not leave it for this.
    `checkpoints`: {key_file, origin, interval, publish} for its checkpointer, or None.
    """
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(links)]
    theirs = [t.fileno() for _, t in pairs]
    settings = {
        "fds": theirs,
        "store": str(path),
        "durability": durability,
        "checkpoints": checkpoints,
        "log_level": log_level,
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wardgate.audit.writer_process", json.dumps(settings)],
            pass_fds=theirs,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
        )
    except OSError as exc:
        for ours, _ in pairs:
            ours.close()
        raise StoreUnavailable(f"cannot start the audit writer process: {exc}") from exc
    finally:
        for _, t in pairs:
            t.close()
    return proc, [ours for ours, _ in pairs]


def _set_result(fut: Any, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: Any, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
