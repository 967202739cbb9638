"""What masking adds to a 1,000-row, 10-column mixed-PII result read through the gateway.

Theory of operation
-------------------
Issue #4's target: masking such a result adds under 20 ms at the median over the same
query unmasked through the gateway. The policy has no switch that turns masking off (the
baseline always applies), so "unmasked" is a diagnostic run of the same gateway in a
process of its own with `Gateway.result_plan` answering "no masker" (nothing scanned,
nothing replaced; statement text masking and recording unchanged). Each mode is a fresh
process running `GatewayServer` on uvloop against one throw-away cluster; psycopg reads
the whole result (`SELECT * FROM bench_pii_1k`, text format) `--runs` times after a
warm-up, and the figure is the median wall time per query as the client sees it, plus
the gateway's CPU per query (this process minus the client thread's own CPU).

    python -m bench.masking_through_gateway [--runs 31]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["main", "measure"]

TABLE = "bench_pii_1k"
COLUMNS = "id, name, email, phone, card, ssn, created, amount, address, notes"


def _create_table(cluster) -> None:  # type: ignore[no-untyped-def]
    from bench.pii_dataset import mixed_rows

    def lit(v: bytes | None) -> str:
        return "NULL" if v is None else "'" + v.decode().replace("'", "''") + "'"

    rows = mixed_rows(1000)
    cols = ", ".join(f"{c} text" for c in COLUMNS.split(", "))
    cluster.psql(
        "orders",
        f"drop table if exists {TABLE}; create table {TABLE} ({cols}); "
        f"grant select on {TABLE} to app",
    )
    for i in range(0, len(rows), 100):  # one command line holds ~100 rows of SQL
        values = ",".join("(" + ",".join(lit(v) for v in r) + ")" for r in rows[i : i + 100])
        cluster.psql("orders", f"insert into {TABLE} values {values}")


def _run_mode(masking: bool, cfg_path: Path, env: dict[str, str], runs: int) -> dict:
    import psycopg
    import uvloop

    from wardgate.config import load_config
    from wardgate.server import GatewayServer

    if not masking:
        from wardgate.pipeline.gateway import Gateway

        Gateway.result_plan = lambda self, *a, **k: (None, True)  # type: ignore[method-assign]
    os.environ.update(env)
    cfg = load_config(cfg_path, check_secrets=True)
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    srv = GatewayServer(cfg)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ready.wait(60)
    port = srv.engines[0].port
    dsn = (
        f"host=127.0.0.1 port={port} user=ci-bot password={env['WG_TOKEN_CI_BOT']} "
        "dbname=orders sslmode=disable"
    )
    walls, gw_cpu = [], []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(3):  # warm-up: plans, caches
                conn.execute(f"SELECT {COLUMNS} FROM {TABLE}").fetchall()
            for _ in range(runs):
                c0, t0 = time.process_time(), time.thread_time()
                w0 = time.perf_counter()
                rows = conn.execute(f"SELECT {COLUMNS} FROM {TABLE}").fetchall()
                walls.append(time.perf_counter() - w0)
                gw_cpu.append((time.process_time() - c0) - (time.thread_time() - t0))
                assert len(rows) == 1000
            sample = rows[0]
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
    return {
        "wall_ms": statistics.median(walls) * 1e3,
        "gateway_cpu_ms": statistics.median(gw_cpu) * 1e3,
        "email_sample": str(sample[2]),
    }


def measure(runs: int = 31) -> dict[str, dict]:
    """{'masked': {...}, 'unmasked': {...}} on one fresh cluster, each mode in its own
    process (the patch must not leak)."""
    from wardgate.testing.gateway_process import write_config
    from wardgate.testing.pgcluster import PgCluster

    cluster = PgCluster.create(database="orders")
    out: dict[str, dict] = {}
    try:
        _create_table(cluster)
        with tempfile.TemporaryDirectory(prefix="wg-maskgw-") as tmp:
            cfg, env = write_config(Path(tmp), cluster, target_tls="disable")
            for mode in ("unmasked", "masked", "unmasked", "masked"):
                r = subprocess.run(
                    [sys.executable, "-m", "bench.masking_through_gateway", "--one", mode,
                     "--config", str(cfg), "--env", json.dumps(env), "--runs", str(runs)],
                    capture_output=True, text=True, check=True, timeout=600,
                )  # fmt: skip
                res = json.loads(r.stdout.strip().splitlines()[-1])
                out.setdefault(mode, []).append(res)  # type: ignore[union-attr]
    finally:
        cluster.destroy()
    return out


def report(results: dict) -> str:
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    added = med("masked", "wall_ms") - med("unmasked", "wall_ms")
    added_cpu = med("masked", "gateway_cpu_ms") - med("unmasked", "gateway_cpu_ms")
    rows = [
        ("unmasked (diagnostic: no masker)", med("unmasked", "wall_ms"),
         med("unmasked", "gateway_cpu_ms")),
        ("masked (as shipped)", med("masked", "wall_ms"), med("masked", "gateway_cpu_ms")),
    ]  # fmt: skip
    lines = [
        "| 1,000 rows x 10 columns, mixed PII | median ms per query (client) "
        "| gateway CPU ms per query |",
        "|---|---:|---:|",
    ]
    lines += [f"| {n} | {w:.1f} | {c:.1f} |" for n, w, c in rows]
    ok = "met" if added < 20 else "NOT met"
    lines.append(f"| **added by masking** | **{added:.1f}** | {added_cpu:.1f} |")
    lines.append("")
    lines.append(f"Target: < 20 ms added at the median: {ok}. A masked value as the client "
                 f"got it: `{results['masked'][0]['email_sample']}`.")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=31)
    ap.add_argument("--one", choices=("masked", "unmasked"))
    ap.add_argument("--config", type=Path)
    ap.add_argument("--env")
    a = ap.parse_args()
    if a.one:
        res = _run_mode(a.one == "masked", a.config, json.loads(a.env), a.runs)
        print(json.dumps(res))
        return
    print(report(measure(a.runs)))


if __name__ == "__main__":
    main()
