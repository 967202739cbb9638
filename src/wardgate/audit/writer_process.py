"""The audit writer process (audit.writer: process): the store's writer and checkpointer
in a process of their own, so their CPU is not taken from the gateway's event loop.

Theory of operation: the gateway (`ProcessAuditStore`, process_store.py) makes a
socketpair and starts `python -m wardgate.audit.writer_process '<json settings>'` with one
end. This process opens the store as the gateway would in thread mode, except that no
writer thread is started: its main thread drives the group-commit writer itself
(`GroupCommitWriter.start_inline`). It starts the checkpointer thread, answers "ready",
then loops: wait for frames (select), decode each into requests, commit everything that
arrived as ONE group commit, answer each gateway with one frame for that commit. What
arrives while a commit runs waits in the socket and makes the next batch. A reply leaves
only after COMMIT returned (with `full` durability, after the fsync): write-ahead audit
holds across the process boundary, since the gateway forwards a statement only after the
reply for its command event arrived. One thread per batch: no queue, no hand-off, no
interpreter lock passed back and forth between a reader and a writer thread (measured:
fewer context switches, less CPU per event). The checkpointer's jobs (signing a
checkpoint in a write transaction) are queued by its thread and run by the main thread
between two commits; a byte on a wake-up socketpair interrupts its select.

Replies carry what the gateway needs and no more: the seq of a command event (the relay
puts it in the statement's result event), nothing at all for a result event (nobody
waits on it; a failed commit is logged here), the record's seq, hash and body for the
other events (approvals, sessions: `submit_async` hands back a whole record).

Result events (nobody waits on them: the statement's response already went to the
client) may wait up to LINGER_SECONDS for the session's next command and join its group
commit, instead of a commit (and fsync) of their own that the command would queue behind:
a batch of result events only is committed once its first is that old. Order is kept:
a batch is committed in arrival order.

Shutdown: on "close" from a gateway, what it sent before is committed at once (lingering
results too) and "bye" follows; when every link has reached end of file (each
gateway closed its end, or died), the writer flushes, the checkpointer signs its final
checkpoint, the store closes and the process exits. With `wardgate serve --workers N`
there is one link per worker process and one writer for all of them.

SIGINT and SIGTERM are ignored: a Ctrl-C in the gateway's terminal, or a service manager
that signals every process of the service (systemd's KillMode=control-group), reaches
this process too, and the gateway still has sessions to end and record; it closes this
process last, in order.
"""

from __future__ import annotations

import gc
import json
import logging
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from wardgate.audit.group_commit import MAX_BATCH, AppendRequest
from wardgate.audit.records import StoreUnavailable
from wardgate.audit.store import AuditStore
from wardgate.audit.writer_link import NO_REPLY, RECORD_REPLY, SEQ_REPLY, FrameReader, encode

__all__ = ["main", "LINGER_KINDS", "LINGER_SECONDS"]

log = logging.getLogger("wardgate.audit.writer")

LINGER_KINDS = frozenset({"result"})
LINGER_SECONDS = 0.002
_POLL = 0.5  # seconds between wake-ups while idle
_RECV = 1 << 20  # bytes read from a link at a time


class _ReplySender:
    """One link's outgoing frames; `send` may be called from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self.broken = False

    def send(self, message: tuple[Any, ...]) -> None:
        data = encode(message)
        with self._lock:
            if self.broken:
                return
            try:
                self._sock.sendall(data)
            except OSError:  # the gateway is gone; nothing to tell
                self.broken = True


class _Checkpoints(threading.Thread):
    """The checkpointer's periodic loop, as a thread (this process has no event loop)."""

    def __init__(self, checkpointer: Any) -> None:
        super().__init__(name="wardgate-checkpointer", daemon=True)
        self.checkpointer = checkpointer
        self.stop = threading.Event()

    def run(self) -> None:
        from wardgate.audit.checkpoint import CheckpointError

        while not self.stop.wait(self.checkpointer.interval):
            try:
                self.checkpointer.checkpoint_now()
            except CheckpointError:
                # never sign past an inconsistency: stop signing, say so loudly
                log.exception("checkpointing stopped: the tree is not consistent")
                return
            except Exception:  # noqa: BLE001 - keep signing once the store is back
                log.exception("periodic checkpoint failed; retrying at the next interval")

    def close(self, drive: Any) -> None:
        """Stop the loop, then sign the final checkpoint. `drive()` runs what the thread
        queued for the writer meanwhile (it may be waiting for a checkpoint job that only
        this, the driving, thread can run)."""
        self.stop.set()
        while self.is_alive():
            drive()
            self.join(0.01)
        try:
            self.checkpointer.close()  # the final checkpoint
        except Exception:  # noqa: BLE001
            log.exception("final checkpoint failed")


def _make_checkpointer(store: AuditStore, settings: dict[str, Any]) -> Any:
    from wardgate.audit.checkpoint import Checkpointer
    from wardgate.audit.keys import init_keyring, load_keyring

    key_file = Path(settings["key_file"])
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        init_keyring(key_file, settings["origin"])
        log.info("checkpoint key created: %s", key_file)
    publish = settings.get("publish")
    return Checkpointer(
        store,
        load_keyring(key_file),
        settings["origin"],
        interval=float(settings["interval"]),
        publish=Path(publish) if publish else None,
    )


class _Link:
    """One gateway process's end: its frames in, its replies out."""

    def __init__(self, sock: socket.socket, server: _Server) -> None:
        self.sock = sock
        self.sender = _ReplySender(sock)
        self.reader = FrameReader(lambda message: server.on_message(self, message))
        self.closing = False  # "close" received: "bye" after the next commit


class _Server:
    """Serves one or more links (`wardgate serve --workers N`: one per worker) until every
    link is closed or gone; the store sees one stream of appends, in arrival order.

    One thread does it all: wait for frames (and for the checkpointer's jobs), decode
    them into requests, commit what came in as one group commit, answer each link with
    one frame. What arrives while a commit runs waits in the socket and forms the next
    batch. A batch of result events only (LINGER_KINDS) waits up to LINGER_SECONDS for
    more (normally the session's next command) before it is committed on its own."""

    def __init__(self, store: AuditStore, links: list[_Link] | None = None) -> None:
        self.store = store
        self.writer = store._writer
        self.links = links or []
        self.batch: list[AppendRequest] = []
        self.owners: list[tuple[_Link, int, int]] = []  # per request: link, rid, reply
        self.urgent = False  # the batch holds an event someone waits for, or a "close"
        self.since = 0.0  # when the batch's first request arrived
        self._make = AppendRequest.make
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake(self) -> None:
        """From the checkpointer thread: a job is queued for the writer."""
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):  # already awake (or closing)
            pass

    def on_message(self, link: _Link, message: tuple[Any, ...]) -> None:
        op = message[0]
        if op == "append":
            batch, owners, make = self.batch, self.owners, self._make
            if not batch:
                self.since = time.monotonic()
            errors = None
            for rid, reply, kind, s, i, c, v, r, meta, payload in message[1]:
                try:
                    req = make(kind, s, i, c, v, r, meta, payload)
                except Exception as exc:  # noqa: BLE001 - bad fields: the caller's error
                    if reply == NO_REPLY:
                        log.error("audit writer: an event was refused: %s", exc)
                    else:
                        if errors is None:
                            errors = []
                        errors.append((rid, type(exc).__name__, str(exc)))
                    continue
                batch.append(req)
                owners.append((link, rid, reply))
                if kind not in LINGER_KINDS:
                    self.urgent = True
            if errors:
                link.sender.send(("error", errors))
            if len(batch) >= MAX_BATCH:
                self.urgent = True
        elif op == "close":
            # "bye" once everything this link sent before is committed: the next commit
            link.closing = True
            self.urgent = True
        else:
            log.error("audit writer: unknown request %r", op)

    def commit(self) -> None:
        """One group commit of everything received, then one reply frame per link."""
        batch, owners = self.batch, self.owners
        self.batch, self.owners, self.urgent = [], [], False
        replies: dict[_Link, tuple[list[Any], list[Any], list[Any]]] = {}
        if batch:
            try:
                seq, when, bodies = self.writer.commit(batch)  # type: ignore[union-attr]
            except StoreUnavailable as exc:
                log.error("%s", exc)
                for link, rid, reply in owners:
                    if reply != NO_REPLY:
                        replies.setdefault(link, ([], [], []))[2].append(
                            (rid, "StoreUnavailable", str(exc))
                        )
            else:
                for (link, rid, reply), req, body in zip(owners, batch, bodies, strict=True):
                    if reply == SEQ_REPLY:
                        entry = replies.get(link)
                        if entry is None:
                            entry = replies[link] = ([], [], [])
                        entry[0].extend((rid, seq))
                    elif reply == RECORD_REPLY:
                        replies.setdefault(link, ([], [], []))[1].append(
                            (rid, seq, req.payload_hash, body)
                        )
                    seq += 1
                for link, (seqs, records, _) in replies.items():
                    link.sender.send(("done", when, seqs, records))
                replies.clear()
        for link, (_, _, errors) in replies.items():
            link.sender.send(("error", errors))
        for link in self.links:
            if link.closing:
                link.closing = False
                link.sender.send(("bye",))

    def serve(self) -> None:
        by_fd = {link.sock.fileno(): link for link in self.links}
        wake_fd = self._wake_r.fileno()
        writer = self.writer
        # one receive buffer for the life of the process: recv(1 MiB) would allocate (mmap)
        # and free a MiB per call, page faults included
        buf = bytearray(_RECV)
        view = memoryview(buf)
        while by_fd:
            timeout = _POLL
            if self.batch:
                timeout = max(0.0, self.since + LINGER_SECONDS - time.monotonic())
            readable, _, _ = select.select([wake_fd, *by_fd], [], [], timeout)
            for fd in readable:
                if fd == wake_fd:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                    writer.run_queued()  # type: ignore[union-attr]
                    continue
                link = by_fd[fd]
                try:
                    n = link.sock.recv_into(buf)
                except OSError:
                    n = 0
                data = view[:n].tobytes()
                if data:
                    try:
                        link.reader.feed(data)
                        continue
                    except Exception:  # noqa: BLE001 - a broken link: drop it, keep the rest
                        log.exception("audit writer: unreadable request from a gateway")
                # end of file: that gateway closed its end, or died
                del by_fd[fd]
            if self.urgent or (self.batch and time.monotonic() - self.since >= LINGER_SECONDS):
                self.commit()
        self.commit()

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()


def _run(settings: dict[str, Any]) -> int:
    fds = settings.get("fds") or [settings["fd"]]
    socks = [socket.socket(fileno=int(fd)) for fd in fds]
    senders = [_ReplySender(sock) for sock in socks]
    store: AuditStore | None = None
    server: _Server | None = None
    wake: list[Any] = []  # the server's wake(), once there is a server
    try:
        # this thread drives the writer (no writer thread): see _Server
        store = AuditStore.open(
            settings["store"], durability=settings["durability"], drive=lambda: wake[0]()
        )
        server = _Server(store)
        wake.append(server.wake)
        checkpoints = None
        if settings.get("checkpoints") is not None:
            checkpoints = _Checkpoints(_make_checkpointer(store, settings["checkpoints"]))
    except Exception as exc:  # noqa: BLE001 - reported to the gateway, which fails to start
        for sender in senders:
            sender.send(("failed", f"{type(exc).__name__}: {exc}"))
        if store is not None:
            store.close()
        return 1
    if checkpoints is not None:
        checkpoints.start()
    server.links = [_Link(sock, server) for sock in socks]
    gc.freeze()  # what start-up made lives as long as the process: not the collector's work
    # a batch makes and drops tens of thousands of acyclic objects (requests, rows,
    # records), freed by reference counting; a young-generation scan every 700 of them
    # only costs time (measured: ~10% more events/s with this threshold)
    gc.set_threshold(50_000, 50, 100)
    size = store.size()
    for link in server.links:
        link.sender.send(("ready", size))
    try:
        server.serve()
    finally:
        # order: every append received is committed and answered (serve commits what it
        # holds before it returns), then the final checkpoint covers them
        if checkpoints is not None:
            checkpoints.close(store._writer.run_queued)  # type: ignore[union-attr]
        store.close()
        server.close()
        for sock in socks:
            sock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = json.loads(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from wardgate.logsafe import install

    install(getattr(logging, str(settings.get("log_level", "INFO")).upper(), logging.INFO))
    return _run(settings)


if __name__ == "__main__":
    sys.exit(main())
