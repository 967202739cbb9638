"""The audit writer process (audit.writer: process): the store's writer and checkpointer
in a process of their own, so their CPU is not taken from the gateway's event loop.

Theory of operation: the gateway (`ProcessAuditStore`, process_store.py) makes a
socketpair and starts `python -m wardgate.audit.writer_process '<json settings>'` with one
end. This process opens the store exactly as the gateway would in thread mode (an
`AuditStore` with its group-commit writer thread), starts the checkpointer, then answers
"ready". Each append request is handed to `AuditStore.submit_async`; its reply leaves
only once the store resolved it, that is once its group commit is durable: write-ahead
audit holds across the process boundary, since the gateway forwards a statement only
after the reply for its command event arrived.

Shutdown: on "close" from the gateway, or end of file (the gateway died), pending appends
finish, the checkpointer signs its final checkpoint, the store closes, "bye" is sent and
the process exits. SIGINT is ignored (a Ctrl-C in the gateway's terminal reaches this
process too, and the gateway shuts it down in order); SIGTERM is a close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from wardgate.audit.records import EventRecord
from wardgate.audit.store import AuditStore
from wardgate.audit.writer_link import FrameReader, encode

__all__ = ["main"]

log = logging.getLogger("wardgate.audit.writer")


# Events nobody waits on before going on: a statement's result is recorded after its
# response went to the client. They wait here up to LINGER_SECONDS for the next event
# that someone does wait on (the session's next command) and join its group commit,
# instead of costing a commit (and, with durability full, an fsync) of their own that the
# next command would have to queue behind. Order is kept: held events are submitted
# before any later event.
LINGER_KINDS = frozenset({"result"})
LINGER_SECONDS = 0.002


class _Writer(asyncio.Protocol):
    def __init__(self, store: AuditStore, closing: asyncio.Event) -> None:
        self.store = store
        self.closing = closing
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader(self._on_message)
        self._done: list[tuple[Any, ...]] = []
        self._errors: list[tuple[Any, ...]] = []
        self._flush_scheduled = False
        self.outstanding = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.lost = False
        self._held: list[tuple[int, str, dict[str, Any]]] = []
        self._linger: asyncio.TimerHandle | None = None

    # -- transport -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except Exception:  # noqa: BLE001 - a broken link: shut down in order
            log.exception("audit writer: unreadable request from the gateway")
            self.closing.set()

    def eof_received(self) -> bool:
        self.closing.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closing.set()

    def send(self, message: tuple[Any, ...]) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(encode(message))

    # -- requests ------------------------------------------------------------------
    def _on_message(self, message: tuple[Any, ...]) -> None:
        op = message[0]
        if op == "append":
            for item in message[1]:
                if item[1] in LINGER_KINDS:
                    self._held.append(item)  # not a local alias: _release swaps the list
                    if self._linger is None:
                        self._linger = asyncio.get_running_loop().call_later(
                            LINGER_SECONDS, self._release
                        )
                else:
                    if self._held:
                        self._release()
                    self._submit(item)
        elif op == "close":
            self._release()
            self.closing.set()
        else:
            log.error("audit writer: unknown request %r", op)

    def _release(self) -> None:
        """Submit the held events, in the order they came."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        held, self._held = self._held, []
        for item in held:
            self._submit(item)

    def _submit(self, item: tuple[int, str, dict[str, Any]]) -> None:
        rid, kind, fields = item
        try:
            waiter = self.store.submit_async(kind, **fields)
        except Exception as exc:  # noqa: BLE001 - bad fields: reported to the caller
            self._errors.append((rid, type(exc).__name__, str(exc)))
            self._schedule_flush()
            return
        self.outstanding += 1
        self.idle.clear()
        waiter.add_done_callback(lambda fut: self._resolved(rid, fut))

    def _resolved(self, rid: int, fut: asyncio.Future[EventRecord]) -> None:
        exc = fut.exception()
        if exc is None:
            r = fut.result()
            self._done.append((rid, r.seq, r.time, r.payload_hash, r.body))
        else:
            self._errors.append((rid, type(exc).__name__, str(exc)))
        self.outstanding -= 1
        if not self.outstanding:
            self.idle.set()
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._done:
            done, self._done = self._done, []
            self.send(("done", done))
        if self._errors:
            errors, self._errors = self._errors, []
            self.send(("error", errors))


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


async def _serve(settings: dict[str, Any]) -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=int(settings["fd"]))
    closing = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, closing.set)
    store: AuditStore | None = None
    proto = _Writer(None, closing)  # type: ignore[arg-type]
    await loop.create_connection(lambda: proto, sock=sock)
    try:
        store = await asyncio.to_thread(
            AuditStore.open, settings["store"], durability=settings["durability"]
        )
        proto.store = store
        checkpointer = None
        if settings.get("checkpoints") is not None:
            checkpointer = _make_checkpointer(store, settings["checkpoints"])
    except Exception as exc:  # noqa: BLE001 - reported to the gateway, which fails to start
        proto.send(("failed", f"{type(exc).__name__}: {exc}"))
        if store is not None:
            await asyncio.to_thread(store.close)
        await asyncio.sleep(0)
        return 1
    if checkpointer is not None:
        checkpointer.start()
    proto.send(("ready", store.size()))
    await closing.wait()
    proto._release()
    # order: every append already received is answered, then the final checkpoint (it
    # covers them), then the store flushes and closes
    await proto.idle.wait()
    proto._flush()
    if checkpointer is not None:
        try:
            await checkpointer.aclose()
        except Exception:  # noqa: BLE001
            log.exception("final checkpoint failed")
    await asyncio.to_thread(store.close)
    proto.send(("bye",))
    if proto.transport is not None:
        proto.transport.close()
    await asyncio.sleep(0)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = json.loads(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from wardgate.logsafe import install

    install(getattr(logging, str(settings.get("log_level", "INFO")).upper(), logging.INFO))
    try:
        import uvloop

        return uvloop.run(_serve(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(_serve(settings))


if __name__ == "__main__":
    sys.exit(main())
