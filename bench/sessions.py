"""Case 5: 500 concurrent sessions, 450 idle and 50 active.

Theory of operation
-------------------
An asyncio thread opens the idle sessions with asyncpg (in waves of 50) and keeps them
open; the proxy's resident set size is read before and after, which gives the memory
one idle session costs (gateway or PgBouncer; a direct session costs a PostgreSQL
backend, which is not comparable, so none is reported). Then pgbench runs `-S` with 50
clients for a few seconds while the idle sessions stay open, and its transaction log
gives the p99 latency of the active ones. The idle sessions are closed before the next
path runs, so the cluster never holds more than ~500 backends.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.harness import Target, pid_rss_kb
from bench.pgbench_runs import run_pgbench

__all__ = ["SessionsResult", "run_sessions"]


@dataclass
class SessionsResult:
    target: str
    idle: int
    active: int
    open_seconds: float
    kb_per_idle_session: float | None
    tps: float
    lat_p50_us: float
    lat_p99_us: float


async def _open_idle(target: Target, n: int, wave: int = 50) -> list:
    import asyncpg

    conns: list = []
    while len(conns) < n:
        k = min(wave, n - len(conns))
        conns += await asyncio.gather(
            *(
                asyncpg.connect(
                    host=target.host,
                    port=target.port,
                    user=target.user,
                    password=target.password,
                    database=target.database,
                    ssl=False,
                    statement_cache_size=0,
                )
                for _ in range(k)
            )
        )
    return conns


async def _close_all(conns: list) -> None:
    await asyncio.gather(*(c.close(timeout=10) for c in conns), return_exceptions=True)


def run_sessions(target: Target, *, idle: int, active: int, seconds: int) -> SessionsResult:
    loop = asyncio.new_event_loop()
    try:
        before = pid_rss_kb(target.pid) if target.pid else 0
        t = time.perf_counter()
        conns = loop.run_until_complete(_open_idle(target, idle))
        opened = time.perf_counter() - t
        time.sleep(0.5)
        after = pid_rss_kb(target.pid) if target.pid else 0
        try:
            r = run_pgbench(target, clients=active, seconds=seconds, threads=2)
        finally:
            loop.run_until_complete(_close_all(conns))
    finally:
        loop.close()
    return SessionsResult(
        target.name,
        idle,
        active,
        opened,
        (after - before) / idle if target.pid else None,
        r.tps,
        r.lat_p50_us,
        r.lat_p99_us,
    )
