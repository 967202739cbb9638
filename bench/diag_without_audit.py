"""Diagnostic, not a configuration: what the gateway does with the audit store taken away.

Theory of operation
-------------------
Runs the gateway in this process (`GatewayServer`, uvloop) against a throw-away cluster
twice: once as shipped, once with the store's `submit` and `submit_async` replaced, for
`command` and `result` events only, by a future that is already done (nothing is written,
nothing is hashed, the writer never hears of them). pgbench `-S` drives both at 1 and 8
clients; the figures are TPS and CPU time per transaction: this process (the event loop,
and the writer thread with `--writer thread`) and, with the default `--writer process`,
the audit writer process too. The difference is what recording two events per statement
costs in the live gateway (interpreter-lock hand-offs with a writer thread, or the link to
the writer process), which the in-process stage costs (bench/pipeline_costs.py) cannot
show. The patched figure is the event loop's own work per statement.

    python -m bench.diag_without_audit [--seconds 5] [--writer process|thread]

Never use the patched mode for anything but this measurement: it breaks write-ahead
audit by construction.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import tempfile
import time
from pathlib import Path

from bench.harness import cpu_seconds

__all__ = ["main", "measure"]


def _patch_store() -> None:
    from wardgate.audit import store as st

    _patch_class(st.AuditStore)
    try:
        from wardgate.audit.process_store import ProcessAuditStore
    except ImportError:  # a tree without the writer process
        return
    _patch_class(ProcessAuditStore)


def _patch_class(cls: type) -> None:
    from wardgate.audit.records import EventRecord

    real = cls.submit  # type: ignore[attr-defined]
    seq = [0]

    def submit(self, kind: str, **kw):  # type: ignore[no-untyped-def]
        if kind not in ("command", "result"):
            return real(self, kind, **kw)
        seq[0] += 1
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(EventRecord(seq[0], "", None, None, None, kind, None, None, None, {}, b""))
        return fut

    real_async = getattr(cls, "submit_async", None)

    def submit_async(self, kind: str, **kw):  # type: ignore[no-untyped-def]
        if kind not in ("command", "result"):
            return real_async(self, kind, **kw)  # type: ignore[misc]
        seq[0] += 1
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(EventRecord(seq[0], "", None, None, None, kind, None, None, None, {}, b""))
        return fut

    def submit_seq(self, kind: str, *args):  # type: ignore[no-untyped-def]
        seq[0] += 1
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(seq[0])
        return fut

    def submit_nowait(self, kind: str, *args) -> None:  # type: ignore[no-untyped-def]
        seq[0] += 1

    cls.submit = submit  # type: ignore[attr-defined]
    if real_async is not None:
        cls.submit_async = submit_async  # type: ignore[attr-defined]
    if getattr(cls, "submit_seq", None) is not None:  # the gateway's event-loop path
        cls.submit_seq = submit_seq  # type: ignore[attr-defined]
        cls.submit_nowait = submit_nowait  # type: ignore[attr-defined]


SWITCHES: list[tuple[float, ...]] = []  # per measure() row: context switches per tx


def _switches(pid: int | None) -> int:
    """Voluntary + involuntary context switches of every thread of a live process."""
    if not pid:
        return 0
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    except OSError:
        return total
    return total


async def _drive(
    cfg_path: Path, env: dict[str, str], seconds: int
) -> list[tuple[int, float, float, float]]:
    from wardgate.config import load_config
    from wardgate.server import GatewayServer

    os.environ.update(env)
    cfg = load_config(cfg_path, check_secrets=True)
    srv = GatewayServer(cfg)
    await srv.start()
    port = srv.engines[0].port
    writer_pid = getattr(srv.store, "writer_pid", None)
    out = []
    try:
        for clients in (1, 8):
            penv = {
                **os.environ,
                "PGHOST": "127.0.0.1",
                "PGPORT": str(port),
                "PGUSER": "ci-bot",
                "PGPASSWORD": env["WG_TOKEN_CI_BOT"],
                "PGDATABASE": "orders",
                "PGSSLMODE": "disable",
            }
            args = ["-n", "-S", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds)]
            t0, w0 = time.process_time(), cpu_seconds(writer_pid)
            s0, ws0 = _switches(os.getpid()), _switches(writer_pid)
            p = await asyncio.create_subprocess_exec(
                "pgbench", *args, env=penv, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            stdout, _ = await p.communicate()
            cpu, writer = time.process_time() - t0, cpu_seconds(writer_pid) - w0
            switches = _switches(os.getpid()) - s0, _switches(writer_pid) - ws0
            tps = float(stdout.decode().split("tps = ")[1].split()[0])
            per_tx = 1e6 / (tps * seconds)
            out.append((clients, tps, cpu * per_tx, writer * per_tx))
            SWITCHES.append(tuple(n / (tps * seconds) for n in switches))
    finally:
        await srv.stop()
    return out


def measure(
    patched: bool, seconds: int = 5, writer: str = "process"
) -> list[tuple[int, float, float, float]]:
    """[(clients, tps, CPU us per transaction of this process, of the writer process)]
    for one mode, on a fresh cluster."""
    import uvloop

    from bench.harness import Target
    from bench.pgbench_runs import pgbench_init
    from wardgate.testing.gateway_process import write_config
    from wardgate.testing.pgcluster import PgCluster

    if patched:
        _patch_store()
    cluster = PgCluster.create(database="orders")
    try:
        c = cluster
        pgbench_init(
            Target("direct", "127.0.0.1", c.port, c.app_user, c.app_password, c.database), 2
        )
        with tempfile.TemporaryDirectory(prefix="wg-diag-") as tmp:
            cfg, env = write_config(
                Path(tmp),
                cluster,
                target_tls="disable",
                extra={"audit": {"durability": "normal", "writer": writer}},
            )
            return uvloop.run(_drive(cfg, env, seconds))
    finally:
        cluster.destroy()


def main() -> None:
    import subprocess
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--mode", choices=("both", "real", "patched"), default="both")
    ap.add_argument("--writer", choices=("process", "thread"), default="process")
    a = ap.parse_args()
    if a.mode == "both":  # each mode in its own process: the patch must not leak
        for mode in ("real", "patched"):
            subprocess.run(
                [sys.executable, "-m", "bench.diag_without_audit", "--mode", mode,
                 "--seconds", str(a.seconds), "--writer", a.writer], check=True,
            )  # fmt: skip
        return
    rows = measure(a.mode == "patched", a.seconds, a.writer)
    for (clients, tps, cpu, writer), (sw, wsw) in zip(rows, SWITCHES, strict=False):
        label = "without command/result events" if a.mode == "patched" else "as shipped"
        print(
            f"{label:32s} {clients} clients: {tps:8,.0f} TPS  {cpu:6,.0f} us CPU/tx"
            f" (+ writer process {writer:5,.0f})  context switches/tx {sw:4.1f} + {wsw:4.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
