"""`/metrics` for the whole of `wardgate serve --workers N`, not just the API's worker.

Theory of operation: every worker keeps its own counters (metrics.py; the hot path is a
dict increment, unchanged). Nothing is sent until someone scrapes:

- each worker runs a `MetricsResponder`: a Unix stream socket in the Linux abstract
  namespace named after the run id and the worker's index. Connecting is the request;
  the worker writes its `Metrics.snapshot()` as one JSON document and closes. Only a
  peer with the worker's own uid is answered (SO_PEERCRED): abstract names have no file
  permissions. The snapshot is taken on the worker's event loop, between statements;
  it costs a copy of a few small dicts per scrape and nothing per statement;
- the process that serves the API renders the page with `WorkerMetrics.render()` (in a
  thread, as the page always was): it connects to every other worker at once, waits for
  the answers until one deadline (`timeout`, 2 s, or less if Prometheus's scrape timeout
  header asks for less), adds its own snapshot and sums them (`merge_snapshots`);
- a worker that did not answer in time (stopped, its loop stuck, its backlog full) is
  reported as `wardgate_worker_up{worker="n"} 0`, and its last answer stands in for it,
  so a counter summed over the workers never goes backwards while the processes live.
  A worker that never answered adds nothing, and says so with the same 0. Answers carry
  a sequence number per worker, so a late answer to an earlier scrape cannot replace a
  newer one. When a worker dies the supervisor stops the whole gateway: every count
  starts again from 0 with the new processes, a counter reset Prometheus's rate()
  handles;
- per worker, the page adds `wardgate_worker_up`, `wardgate_worker_sessions_active` and
  `wardgate_worker_statements_total` (labelled `worker`), to spot an uneven spread.

Gauge sources (approvals pending, audit events) describe the store, which the workers
share: only the rendering process reads them, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import selectors
import socket
import struct
import threading
import time
from typing import Any

from wardgate.metrics import METRICS, Metrics, Snapshot, merge_snapshots, render_prometheus

__all__ = ["MetricsResponder", "WorkerMetrics", "metrics_address"]

SCRAPE_TIMEOUT = 2.0
_MAX_ANSWER = 16 * 1024 * 1024  # far above any real page; bounds a confused peer
_SEND_TIMEOUT = 5.0


def metrics_address(run_id: str, index: int) -> str:
    return f"\0wardgate-{run_id}-metrics-{index}"


def _peer_uid(sock: Any) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", raw)[1]


class MetricsResponder:
    """Answers a connection on this worker's metrics address with its snapshot."""

    def __init__(self, run_id: str, index: int, metrics: Metrics = METRICS) -> None:
        self.address = metrics_address(run_id, index)
        self.index = index
        self.metrics = metrics
        self._seq = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.address)
            sock.listen(16)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        # uvloop's start_unix_server takes an abstract address only as a bound socket
        self._server = await asyncio.start_unix_server(self._answer, sock=sock)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if _peer_uid(writer.get_extra_info("socket")) != os.getuid():
                return
            answer = {
                "worker": self.index,
                "pid": os.getpid(),
                "seq": next(self._seq),
                "families": self.metrics.snapshot(),
            }
            writer.write(json.dumps(answer, separators=(",", ":")).encode())
            await asyncio.wait_for(writer.drain(), _SEND_TIMEOUT)
        except (TimeoutError, OSError):
            pass  # the scraper gave up or went away: nothing to do
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):  # an answer still being sent: let it go
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None


class WorkerMetrics:
    """Renders the page of worker `index` (the API's) with every worker's figures."""

    def __init__(
        self,
        run_id: str,
        index: int,
        workers: int,
        metrics: Metrics = METRICS,
        timeout: float = SCRAPE_TIMEOUT,
    ) -> None:
        self.run_id = run_id
        self.index = index
        self.workers = workers
        self.metrics = metrics
        self.timeout = timeout
        self._lock = threading.Lock()
        self._last: dict[int, tuple[int, Snapshot]] = {}  # worker -> (seq, families)

    def render(self, timeout: float | None = None) -> str:
        """The whole gateway's page; blocks up to `timeout` (default: self.timeout)."""
        answers = self.collect(self.timeout if timeout is None else timeout)
        up: dict[int, bool] = {self.index: True}
        snaps: dict[int, Snapshot] = {self.index: self.metrics.snapshot()}
        with self._lock:
            for i, answer in answers.items():
                if answer is not None:
                    seq, fams = int(answer["seq"]), answer["families"]
                    if seq > self._last.get(i, (0, {}))[0]:
                        self._last[i] = (seq, fams)
                up[i] = answer is not None
                if i in self._last:
                    snaps[i] = self._last[i][1]
        merged = merge_snapshots(snaps[i] for i in sorted(snaps))
        return render_prometheus(self.metrics, merged=merged, extra=_per_worker(up, snaps))

    def collect(self, timeout: float) -> dict[int, dict[str, Any] | None]:
        """Every other worker's answer, or None where none came before the deadline."""
        deadline = time.monotonic() + max(timeout, 0.0)
        out: dict[int, dict[str, Any] | None] = {}
        pending: dict[socket.socket, tuple[int, bytearray]] = {}
        sel = selectors.DefaultSelector()
        try:
            for i in range(self.workers):
                if i == self.index:
                    continue
                out[i] = None
                try:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                except OSError:  # out of file descriptors: that worker is not heard
                    continue
                sock.setblocking(False)
                # a Unix connect completes at once or fails at once (EAGAIN: backlog full)
                if sock.connect_ex(metrics_address(self.run_id, i)) != 0:
                    sock.close()
                    continue
                # an abstract name can be taken by anyone: believe only a listener of
                # our own uid (a worker), not another user's process squatting its name
                if _peer_uid(sock) != os.getuid():
                    sock.close()
                    continue
                pending[sock] = (i, bytearray())
                sel.register(sock, selectors.EVENT_READ)
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in sel.select(remaining):
                    sock = key.fileobj  # type: ignore[assignment]
                    i, buf = pending[sock]
                    try:
                        chunk: bytes | None = sock.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        chunk = None  # reset by the worker: no answer
                    if chunk and len(buf) + len(chunk) <= _MAX_ANSWER:
                        buf += chunk
                        continue
                    sel.unregister(sock)
                    sock.close()
                    del pending[sock]
                    out[i] = _parse(buf, i) if chunk == b"" else None  # b"": the whole answer
        finally:
            for sock in pending:
                sock.close()
            sel.close()
        return out


def _parse(buf: bytearray, index: int) -> dict[str, Any] | None:
    try:
        answer = json.loads(buf)
    except ValueError:
        return None
    ok = (
        isinstance(answer, dict)
        and answer.get("worker") == index
        and isinstance(answer.get("seq"), int)
        and isinstance(answer.get("families"), dict)
        and all(
            isinstance(f, dict)
            and f.get("kind") in ("counter", "gauge", "histogram")
            and isinstance(f.get("values"), list)
            and isinstance(f.get("labels"), list)
            for f in answer["families"].values()
        )
    )
    return answer if ok else None


def _sum_family(snap: Snapshot, name: str) -> float:
    fam = snap.get(name)
    return sum(v for _, v in fam["values"]) if fam else 0.0


def _per_worker(up: dict[int, bool], snaps: dict[int, Snapshot]) -> list:
    """The per-worker families (name, help, kind, labels, items) for the page."""
    workers = sorted(up)
    known = [i for i in workers if i in snaps]
    return [
        (
            "wardgate_worker_up",
            "1 if the worker's figures on this page are fresh, 0 if it did not answer in "
            "time (its last figures, if any, stand in for it).",
            "gauge",
            ("worker",),
            [((str(i),), 1 if up[i] else 0) for i in workers],
        ),
        (
            "wardgate_worker_sessions_active",
            "Agent sessions open now on each worker process.",
            "gauge",
            ("worker",),
            [((str(i),), _sum_family(snaps[i], "wardgate_sessions_active")) for i in known],
        ),
        (
            "wardgate_worker_statements_total",
            "Statements decided by each worker process.",
            "counter",
            ("worker",),
            [((str(i),), _sum_family(snaps[i], "wardgate_statements_total")) for i in known],
        ),
    ]
