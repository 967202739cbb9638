"""`wardgate serve --workers N`: several gateway processes on the same ports, one store.

Theory of operation: one Python process runs one event loop on one core. With `workers`
above 1, `wardgate serve` becomes a supervisor that serves nothing itself:

1. it records the end of sessions a previous run left open (as a single gateway does at
   start), and makes the checkpoint key if there is none;
2. it starts ONE audit writer process (audit/writer_process.py) with one link per worker:
   every worker's events go into one Merkle log, in one total order, and checkpoints are
   signed in one place;
3. it starts N worker processes (`python -m wardgate.workers worker ...`), each a full
   gateway (`GatewayServer` with a `WorkerSpec`) whose listeners bind the configured
   ports with SO_REUSEPORT, so the kernel spreads new connections across them. Only
   worker 0 serves the HTTP API (approvals and /metrics); each worker answers a scrape
   with its own figures over an abstract Unix socket and /metrics sums them
   (worker_metrics.py).
   Approval requests and decisions live in the store's SQLite tables, so a reviewer's
   decision reaches a statement held by any worker; all workers share one run id, so no
   worker abandons another's pending requests;
4. a CancelRequest can reach a worker that did not issue its key: that worker passes it
   to the others over Linux abstract Unix datagram sockets named after the run id, and
   the worker that issued the key acts on it (the key is the secret, as with PostgreSQL);
5. it logs `gateway_ready` once every worker is ready, then waits for SIGTERM or SIGINT.
   Then it stops the workers (each ends and records its sessions), and the writer,
   seeing every link closed, signs the final checkpoint and exits. If a worker or the
   writer dies, the supervisor stops the rest and exits 1, so the service manager
   restarts the whole gateway: a smaller, silently degraded gateway is not what anyone
   configured (and without its writer every worker refuses every statement).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from wardgate.config import Config
from wardgate.worker_metrics import MetricsResponder

__all__ = ["run_supervisor", "worker_main"]

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0


def _cancel_address(run_id: str, index: int) -> str:
    return f"\0wardgate-{run_id}-cancel-{index}"


class CancelRouter:
    """Hands CancelRequests between sibling workers (see the module docstring, step 4).

    Plain non-blocking datagram sockets with `add_reader` (uvloop's datagram transport
    does not send to abstract Unix addresses)."""

    def __init__(self, run_id: str, index: int, workers: int, engines: list[Any]) -> None:
        self.run_id = run_id
        self.index = index
        self.workers = workers
        self.engines = {e.conn.name: e for e in engines}
        self.sock: socket.socket | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(_cancel_address(self.run_id, self.index))
        sock.setblocking(False)
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        for engine in self.engines.values():
            engine.forward_cancel = self.forward

    def forward(self, connection: str, pid: int, secret: int, client_addr: str) -> None:
        if self.sock is None:
            return
        data = json.dumps([connection, pid, secret, client_addr]).encode()
        for i in range(self.workers):
            if i != self.index:
                with contextlib.suppress(OSError):  # a sibling that is gone: nothing to do
                    self.sock.sendto(data, _cancel_address(self.run_id, i))

    def _readable(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                connection, pid, secret, client_addr = json.loads(data)
                engine = self.engines.get(connection)
                if engine is not None:
                    engine.cancel_from_sibling(int(pid), int(secret), str(client_addr))
            except (ValueError, TypeError):
                pass  # not ours to understand; cancels are best effort, as in PostgreSQL

    def close(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


# --------------------------------------------------------------------------- worker


async def _worker(cfg: Config, spec: dict[str, Any]) -> int:
    from wardgate.server import GatewayServer, WorkerSpec

    link = socket.socket(fileno=int(spec["link_fd"]))
    worker = WorkerSpec(
        link=link,
        index=int(spec["index"]),
        run_id=str(spec["run_id"]),
        workers=int(spec["workers"]),
    )
    server = GatewayServer(cfg, worker=worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    router = CancelRouter(worker.run_id, worker.index, worker.workers, server.engines)
    await router.start()
    responder = None
    if cfg.api.listen is not None and cfg.api.metrics:  # worker 0's /metrics asks
        responder = MetricsResponder(worker.run_id, worker.index)
        await responder.start()
    ready = {"worker": worker.index, "pid": os.getpid()}
    ready["listeners"] = {e.conn.name: f"{e.conn.listen[0]}:{e.port}" for e in server.engines}
    os.write(int(spec["ready_fd"]), (json.dumps(ready) + "\n").encode())
    os.close(int(spec["ready_fd"]))
    await stop.wait()
    if responder is not None:
        await responder.close()
    router.close()
    await server.stop()
    return 0


def worker_main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    from wardgate.config import load_config
    from wardgate.server import _configure_logging

    cfg = load_config(Path(spec["config"]))
    cfg.check_secrets()
    _configure_logging(cfg)
    import uvloop

    return uvloop.run(_worker(cfg, spec))


# --------------------------------------------------------------------------- supervisor


class _Stop(Exception):
    pass


def run_supervisor(cfg: Config, config_path: Path, workers: int) -> int:
    """Run `workers` gateway processes and their writer until SIGTERM/SIGINT; exit code."""
    from wardgate.audit.process_store import spawn_writer
    from wardgate.audit.store import AuditStore, parse_store_url
    from wardgate.engines.postgres.engine import log_line
    from wardgate.server import _checkpoint_settings, _configure_logging, _end_orphaned_sessions

    _configure_logging(cfg)
    cfg.check_secrets()
    for conn in cfg.connections:
        if conn.listen[1] == 0:
            raise OSError(f"connection {conn.name}: --workers needs a fixed listen port, not 0")
    store = AuditStore.open(cfg.store, durability=cfg.audit.durability)
    try:
        _end_orphaned_sessions(store)
    finally:
        store.close()
    run_id = uuid.uuid4().hex
    writer, links = spawn_writer(
        parse_store_url(cfg.store),
        durability=cfg.audit.durability,
        checkpoints=_checkpoint_settings(cfg),
        log_level=cfg.logging.level,
        links=workers,
    )
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopping:
            raise _Stop

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs: list[subprocess.Popen[bytes]] = []
    code = 0
    try:
        ready_r, ready_w = os.pipe()
        for index, link in enumerate(links):
            spec = {
                "config": str(config_path),
                "link_fd": link.fileno(),
                "index": index,
                "workers": workers,
                "run_id": run_id,
                "ready_fd": ready_w,
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "wardgate.workers", "worker", json.dumps(spec)],
                    pass_fds=(link.fileno(), ready_w),
                    stdin=subprocess.DEVNULL,
                )
            )
            link.close()
        os.close(ready_w)
        readies = _wait_ready(ready_r, workers, procs)
        os.close(ready_r)
        log_line(
            "gateway_ready",
            listeners=readies[0]["listeners"],
            api=f"{cfg.api.listen[0]}:{cfg.api.listen[1]}" if cfg.api.listen else None,
            store=str(parse_store_url(cfg.store)),
            workers=[r["pid"] for r in readies],
            writer=writer.pid,
        )
        while True:  # until a signal (raises _Stop), or a worker or the writer exits
            for p in procs:
                if p.poll() is not None:
                    log_line("worker_exited", pid=p.pid, status=p.returncode)
                    code = 1
                    raise _Stop
            if writer.poll() is not None:  # every worker now refuses every statement
                log_line("audit_writer_exited", pid=writer.pid, status=writer.returncode)
                code = 1
                raise _Stop
            time.sleep(0.2)
    except _Stop:
        pass
    except Exception as exc:  # noqa: BLE001 - a worker failed to start: stop the others
        log_line("gateway_start_failed", reason=str(exc))
        code = 1
    finally:
        stopping = True
        log_line("gateway_stopping")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.returncode not in (0, None) and code == 0:
                code = 1
        for link in links:
            with contextlib.suppress(OSError):
                link.close()
        try:  # every link closed: the writer signs the final checkpoint and exits
            writer.wait(_STOP_TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
            code = 1
        for s, handler in old.items():
            signal.signal(s, handler)
        log_line("gateway_stopped")
    return code


def _wait_ready(fd: int, workers: int, procs: list[subprocess.Popen[bytes]]) -> list[dict]:
    """Read one ready line per worker; raise if one exits first or time runs out."""
    buf = b""
    deadline = time.monotonic() + _START_TIMEOUT
    while buf.count(b"\n") < workers:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError("the workers did not start in time")
        readable, _, _ = select.select([fd], [], [], min(remaining, 0.2))
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk and buf.count(b"\n") < workers:
                raise RuntimeError("a worker exited during start (see its log lines)")
            buf += chunk
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker {p.pid} exited during start with {p.returncode}")
    readies = [json.loads(line) for line in buf.splitlines() if line.strip()]
    return sorted(readies, key=lambda r: r["worker"])


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("usage: python -m wardgate.workers worker '<json spec>'")
