"""The audit writer process (audit.writer: process): the store's writer and checkpointer
in a process of their own, so their CPU is not taken from the gateway's event loop.

Theory of operation: the gateway (`ProcessAuditStore`, process_store.py) makes a
socketpair and starts `python -m wardgate.audit.writer_process '<json settings>'` with one
end. This process opens the store exactly as the gateway would in thread mode (an
`AuditStore` with its group-commit writer thread), starts the checkpointer thread, then
answers "ready". It has no event loop: the main thread blocks on the socket, decodes each
frame of requests and queues them to the writer thread; the writer thread, once a group
commit is durable, encodes the replies of that whole batch as one frame and sends it
itself (the request's `loop` is a `_ReplySender`, whose `call_soon_threadsafe` the writer
calls once per batch). So a reply leaves only once its event is durable: write-ahead
audit holds across the process boundary, since the gateway forwards a statement only
after the reply for its command event arrived. Two threads, no futures per event.

Result events (nobody waits on them: the statement's response already went to the
client) are held up to LINGER_SECONDS for the session's next command and join its group
commit, instead of a commit (and fsync) of their own that the command would queue behind.
Order is kept: held events are queued before any later event.

Shutdown: on "close" from a gateway, held events are queued and "bye" follows once
everything that gateway sent is committed; when every link has reached end of file (each
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

from wardgate.audit.group_commit import AppendRequest
from wardgate.audit.store import AuditStore
from wardgate.audit.writer_link import FrameReader, encode

__all__ = ["main", "LINGER_KINDS", "LINGER_SECONDS"]

log = logging.getLogger("wardgate.audit.writer")

LINGER_KINDS = frozenset({"result"})
LINGER_SECONDS = 0.002
_POLL = 0.5  # seconds between wake-ups while idle


class _ReplySender:
    """Stands in for an event loop in the writer's completion path: the writer resolves
    all requests of one group commit with one `call_soon_threadsafe(fn, pairs)` per loop,
    where each pair is (waiter, record, exception) and our waiter is the request id."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self.broken = False

    def call_soon_threadsafe(self, _fn: Any, pairs: list[tuple[Any, Any, Any]]) -> None:
        done = []
        errors = []
        for rid, rec, exc in pairs:
            if exc is None:
                done.append((rid, rec.seq, rec.time, rec.payload_hash, rec.body))
            else:
                errors.append((rid, type(exc).__name__, str(exc)))
        if done:
            self.send(("done", done))
        if errors:
            self.send(("error", errors))

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

    def close(self) -> None:
        self.stop.set()
        self.join()
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
        self.closing = False


class _Server:
    """Serves one or more links (`wardgate serve --workers N`: one per worker) until every
    link is closed or gone; the store sees one stream of appends, in arrival order."""

    def __init__(self, store: AuditStore, links: list[_Link] | None = None) -> None:
        self.store = store
        self.links = links or []
        self.held: list[tuple[_Link, tuple[int, str, dict[str, Any]]]] = []
        self.held_since = 0.0

    def on_message(self, link: _Link, message: tuple[Any, ...]) -> None:
        op = message[0]
        if op == "append":
            for item in message[1]:
                if item[1] in LINGER_KINDS:
                    if not self.held:
                        self.held_since = time.monotonic()
                    self.held.append((link, item))
                else:
                    if self.held:
                        self.release()
                    self._queue(link, item)
        elif op == "close":
            self.release()
            link.closing = True
            # "bye" once everything this link sent before is committed: a job queued now
            # runs after every append queued before it
            done = self.store.transact(lambda conn, frontier: None)
            done.add_done_callback(lambda _fut: link.sender.send(("bye",)))
        else:
            log.error("audit writer: unknown request %r", op)

    def release(self) -> None:
        held, self.held = self.held, []
        for link, item in held:
            self._queue(link, item)

    def _queue(self, link: _Link, item: tuple[int, str, dict[str, Any]]) -> None:
        rid, kind, fields = item
        try:
            req = AppendRequest.from_fields(kind, fields)
        except Exception as exc:  # noqa: BLE001 - bad fields: reported to the caller
            link.sender.send(("error", [(rid, type(exc).__name__, str(exc))]))
            return
        req.waiter = rid  # type: ignore[assignment]
        req.loop = link.sender  # type: ignore[assignment]
        self.store._enqueue(req)

    def serve(self) -> None:
        by_fd = {link.sock.fileno(): link for link in self.links}
        while by_fd:
            timeout = _POLL
            if self.held:
                timeout = max(0.0, self.held_since + LINGER_SECONDS - time.monotonic())
            readable, _, _ = select.select(list(by_fd), [], [], timeout)
            for fd in readable:
                link = by_fd[fd]
                try:
                    data = link.sock.recv(1 << 20)
                except OSError:
                    data = b""
                if data:
                    try:
                        link.reader.feed(data)
                        continue
                    except Exception:  # noqa: BLE001 - a broken link: drop it, keep the rest
                        log.exception("audit writer: unreadable request from a gateway")
                # end of file: that gateway closed its end, or died
                del by_fd[fd]
            if self.held and time.monotonic() - self.held_since >= LINGER_SECONDS:
                self.release()
        self.release()


def _run(settings: dict[str, Any]) -> int:
    fds = settings.get("fds") or [settings["fd"]]
    socks = [socket.socket(fileno=int(fd)) for fd in fds]
    senders = [_ReplySender(sock) for sock in socks]
    store: AuditStore | None = None
    try:
        store = AuditStore.open(settings["store"], durability=settings["durability"])
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
    server = _Server(store)
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
        # order: every append received is committed and answered (the writer flushes its
        # queue on close), then the final checkpoint covers them
        if checkpoints is not None:
            checkpoints.close()
        store.close()
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
