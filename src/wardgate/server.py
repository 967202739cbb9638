"""`wardgate serve`: start every listener of the config and run until a signal.

Order of start: the store (fail early if it cannot be opened), identities (fail early if
a secret reference is missing; OIDC providers' keys fetched, never fatal), the pipeline,
the approval broker (which marks requests left pending by a previous run as abandoned),
the checkpointer, the listeners, then the HTTP API. On SIGTERM or SIGINT everything stops in reverse order: listeners close their
sessions (recorded as ended), the broker abandons pending requests, a final checkpoint is
signed, the store flushes, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

from wardgate.audit.process_store import ProcessAuditStore
from wardgate.audit.store import AuditStore
from wardgate.config import Config
from wardgate.engines.postgres.engine import PostgresEngine, log_line
from wardgate.identity.registry import IdentityRegistry
from wardgate.pipeline.gateway import Gateway

__all__ = ["GatewayServer", "WorkerSpec", "ENGINES", "serve"]

log = logging.getLogger("wardgate.server")

# protocol name -> engine class (the registry later protocols plug into)
ENGINES: dict[str, type] = {"postgres": PostgresEngine}


@dataclass(frozen=True)
class WorkerSpec:
    """This process is worker `index` of `wardgate serve --workers N` (workers.py): its
    audit store is a link to the supervisor's writer process, its listeners share their
    ports with the other workers (SO_REUSEPORT), and only worker 0 serves the HTTP API,
    whose `/metrics` sums the `workers` processes' figures (worker_metrics.py)."""

    link: socket.socket
    index: int
    run_id: str
    workers: int = 1


class GatewayServer:
    def __init__(self, config: Config, *, worker: WorkerSpec | None = None) -> None:
        self.config = config
        self.worker = worker
        self.store: AuditStore | None = None
        self.gateway: Gateway | None = None
        self.engines: list[Any] = []
        self.broker: Any = None
        self.checkpointer: Any = None
        self._api: tuple[Any, Any] | None = None
        self.oidc: Any = None

    async def start(self) -> None:
        cfg = self.config
        cfg.check_secrets()
        worker = self.worker
        if worker is not None:  # the supervisor ended orphaned sessions before any worker
            self.store = await ProcessAuditStore.attach(
                worker.link, cfg.store, durability=cfg.audit.durability
            )
        elif cfg.audit.writer == "process":
            self.store = await _start_writer_process(cfg)
        else:
            self.store = AuditStore.open(cfg.store, durability=cfg.audit.durability)
        if worker is None:
            await asyncio.to_thread(_end_orphaned_sessions, self.store)
        identities = IdentityRegistry.from_config(cfg)
        # OIDC providers' keys: fetched once now, then refreshed in the background; a
        # provider that cannot be reached is logged and its identities fail closed, while
        # token identities are served as usual
        self.oidc = identities.oidc
        await identities.oidc.start()
        self.gateway = Gateway(cfg, self.store, identities=identities)
        self.broker = _make_broker(cfg, self.store, identities)
        if self.broker is not None:
            if worker is not None:  # one run: workers never abandon each other's requests
                self.broker.run_id = worker.run_id
            await self.broker.start()
            self.gateway.broker = self.broker
        if cfg.audit.writer == "thread" and worker is None:  # else the writer process signs
            self.checkpointer = _make_checkpointer(cfg, self.store)
            self.checkpointer.start()
        for conn in cfg.connections:
            engine = ENGINES[conn.protocol](self.gateway, conn)
            engine.reuse_port = worker is not None
            await engine.start()
            self.engines.append(engine)
        serve_api_here = worker is None or worker.index == 0
        if cfg.api.listen is not None and self.broker is not None and serve_api_here:
            from wardgate.api.app import create_app, serve_api
            from wardgate.metrics import METRICS

            every_worker = None
            if worker is not None and worker.workers > 1 and cfg.api.metrics:
                from wardgate.worker_metrics import WorkerMetrics

                every_worker = WorkerMetrics(worker.run_id, worker.index, worker.workers)
            app = create_app(
                self.broker,
                identities,
                metrics=METRICS if cfg.api.metrics else None,
                worker_metrics=every_worker,
            )
            self._api = await serve_api(app, *cfg.api.listen)
        log_line(
            "gateway_ready" if worker is None else "worker_ready",
            **({} if worker is None else {"worker": worker.index, "pid": os.getpid()}),
            listeners={e.conn.name: f"{e.conn.listen[0]}:{e.port}" for e in self.engines},
            api=f"{cfg.api.listen[0]}:{cfg.api.listen[1]}" if cfg.api.listen else None,
            store=str(self.store.path),
        )

    async def stop(self) -> None:
        for engine in self.engines:
            await engine.stop()
        if self._api is not None:
            server, task = self._api
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
        if self.oidc is not None:
            await self.oidc.aclose()
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.close()
        if self.checkpointer is not None:
            try:
                await self.checkpointer.aclose()  # the checkpoint at shutdown
            except Exception:
                log.exception("final checkpoint failed")
        if isinstance(self.store, ProcessAuditStore):
            await self.store.aclose()  # the writer process signs the final checkpoint
        elif self.store is not None:
            await asyncio.to_thread(self.store.close)
        log_line("gateway_stopped" if self.worker is None else "worker_stopped")


def _end_orphaned_sessions(store: AuditStore) -> None:
    """Sessions a previous run never ended (it was killed) are recorded as ended now, so
    every session in the record has an end and says why. One indexed query: no set of
    every session the store ever held."""
    for session, identity, connection in store.open_sessions():
        store.append_sync(
            "session_end",
            session=session,
            identity=identity,
            connection=connection,
            meta={
                "statements": None,
                "reason": "gateway stopped without ending the session (recorded at the next start)",
            },
        )


async def _start_writer_process(cfg: Config) -> ProcessAuditStore:
    """The audit writer and checkpointer in a child process (audit.writer: process)."""
    return await ProcessAuditStore.start(
        cfg.store,
        durability=cfg.audit.durability,
        checkpoints=_checkpoint_settings(cfg),
        log_level=cfg.logging.level,
    )


def _checkpoint_settings(cfg: Config) -> dict[str, Any]:
    """What the writer process needs to sign checkpoints; makes the key on first start."""
    cp = cfg.checkpoints
    _ensure_key(cfg)
    return {
        "key_file": str(cp.key_file),
        "origin": cp.origin,
        "interval": cp.interval_seconds,
        "publish": None if cp.publish is None else str(cp.publish),
    }


def _make_broker(cfg: Config, store: AuditStore, identities: IdentityRegistry) -> Any:
    from wardgate.approvals.broker import ApprovalBroker

    notifier = None
    try:
        from wardgate.approvals.notify import Notifier

        notifier = (
            Notifier.from_policies(cfg.policies, store)
            if hasattr(Notifier, "from_policies")
            else None
        )
    except Exception:
        log.exception("webhook notifications disabled: bad notify settings")
    return ApprovalBroker(
        store, reviewers=identities, notifier=notifier, poll_interval=cfg.approvals.poll_interval
    )


def _make_checkpointer(cfg: Config, store: AuditStore) -> Any:
    """Signed checkpoints every `checkpoints.interval`; the key is made on first start."""
    from wardgate.audit.checkpoint import Checkpointer
    from wardgate.audit.keys import load_keyring

    key_file = _ensure_key(cfg)
    return Checkpointer(
        store,
        load_keyring(key_file),
        cfg.checkpoints.origin,
        interval=cfg.checkpoints.interval_seconds,
        publish=cfg.checkpoints.publish,
    )


def _ensure_key(cfg: Config) -> Any:
    """The checkpoint key file, made on first start."""
    from wardgate.audit.keys import init_keyring

    key_file = cfg.checkpoints.key_file
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        init_keyring(key_file, cfg.checkpoints.origin)
        log_line("checkpoint_key_created", key_file=str(key_file))
    return key_file


def _configure_logging(config: Config) -> None:
    from wardgate.logsafe import install

    # exceptions are logged by type and frames only: their messages can hold data
    install(getattr(logging, config.logging.level.upper()))


async def serve(config: Config) -> int:
    _configure_logging(config)
    server = GatewayServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # before start(): a signal that arrives while listeners open still stops cleanly
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log_line("gateway_stopping")
    await server.stop()
    return 0
