"""Diagnostic, not a configuration: what the gateway does with the audit store taken away.

Theory of operation
-------------------
Runs the gateway in this process (`GatewayServer`, uvloop) against a throw-away cluster
twice: once as shipped, once with `AuditStore.submit` and `submit_async` replaced, for
`command` and `result` events only, by a future that is already done (nothing is written, nothing is
hashed, no writer thread wakes up). pgbench `-S` drives both at 1 and 8 clients; the
figures are TPS and the CPU time of this process per transaction. The difference is
what recording two events per statement costs in the live process (including the
interpreter-lock hand-offs between the event loop and the writer thread), which the
in-process stage costs (bench/pipeline_costs.py) cannot show.

    python -m bench.diag_without_audit [--seconds 5]

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

__all__ = ["main", "measure"]


def _patch_store() -> None:
    from wardgate.audit import store as st
    from wardgate.audit.records import EventRecord

    real = st.AuditStore.submit
    seq = [0]

    def submit(self, kind: str, **kw):  # type: ignore[no-untyped-def]
        if kind not in ("command", "result"):
            return real(self, kind, **kw)
        seq[0] += 1
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(EventRecord(seq[0], "", None, None, None, kind, None, None, None, {}, b""))
        return fut

    real_async = getattr(st.AuditStore, "submit_async", None)

    def submit_async(self, kind: str, **kw):  # type: ignore[no-untyped-def]
        if kind not in ("command", "result"):
            return real_async(self, kind, **kw)  # type: ignore[misc]
        seq[0] += 1
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(EventRecord(seq[0], "", None, None, None, kind, None, None, None, {}, b""))
        return fut

    st.AuditStore.submit = submit  # type: ignore[method-assign]
    if real_async is not None:  # the gateway's event-loop path
        st.AuditStore.submit_async = submit_async  # type: ignore[method-assign]


async def _drive(
    cfg_path: Path, env: dict[str, str], seconds: int
) -> list[tuple[int, float, float]]:
    from wardgate.config import load_config
    from wardgate.server import GatewayServer

    os.environ.update(env)
    cfg = load_config(cfg_path, check_secrets=True)
    srv = GatewayServer(cfg)
    await srv.start()
    port = srv.engines[0].port
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
            t0 = time.process_time()
            p = await asyncio.create_subprocess_exec(
                "pgbench", *args, env=penv, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            stdout, _ = await p.communicate()
            cpu = time.process_time() - t0
            tps = float(stdout.decode().split("tps = ")[1].split()[0])
            out.append((clients, tps, cpu / (tps * seconds) * 1e6))
    finally:
        await srv.stop()
    return out


def measure(patched: bool, seconds: int = 5) -> list[tuple[int, float, float]]:
    """[(clients, tps, CPU us per transaction)] for one mode, on a fresh cluster."""
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
                Path(tmp), cluster, target_tls="disable", extra={"audit": {"durability": "normal"}}
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
    a = ap.parse_args()
    if a.mode == "both":  # each mode in its own process: the patch must not leak
        for mode in ("real", "patched"):
            subprocess.run(
                [sys.executable, "-m", "bench.diag_without_audit", "--mode", mode,
                 "--seconds", str(a.seconds)], check=True,
            )  # fmt: skip
        return
    for clients, tps, cpu in measure(a.mode == "patched", a.seconds):
        label = "without command/result events" if a.mode == "patched" else "as shipped"
        print(f"{label:32s} {clients} clients: {tps:8,.0f} TPS  {cpu:6,.0f} us CPU/tx", flush=True)


if __name__ == "__main__":
    main()
