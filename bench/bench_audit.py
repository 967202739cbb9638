"""Audit log benchmarks: append throughput and latency, verify, proofs, evidence bundles.

Run: `.venv/bin/python bench/bench_audit.py [--events 200000] [--verify-events 1000000]
[--bundle-events 100000]`. Prints a Markdown table (the figures for docs/benchmarks.md),
each row with its target and whether this run met it. Every store is a fresh SQLite file
in a temporary directory with durability "full" (synchronous=FULL: one fsync per group
commit). The baseline row is raw SQLite: the same event rows inserted with executemany
in 4,096-row transactions by one thread, no hashing, no Merkle tree, no futures.

Throughput is measured sustained: each producer thread keeps at most `INFLIGHT` appends
waiting (as that many sessions would, each waiting for its own event), checking every
result. The "all submitted first" row submits every event before waiting for any: it
keeps all futures and records alive to the end, so Python's garbage collector scans a
heap that grows with the run (what the first versions of this bench measured). The
event-loop row is the gateway's own path: coroutines (sessions) awaiting `append`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from wardgate.audit.checkpoint import Checkpointer
from wardgate.audit.evidence import export_bundle, verify_bundle
from wardgate.audit.keys import init_keyring
from wardgate.audit.store import AuditStore
from wardgate.audit.verify import verify_store

ORIGIN = "bench.wardgate/log"
META = {"index": 3, "via": "simple", "kinds": ["select"], "objects": ["public.users"],
        "reason": "allowed by rule read-only", "fingerprint": "9f2c51d0e3a4b7c8"}  # fmt: skip


def _payload(i: int) -> bytes:
    return json.dumps({"text": f"SELECT * FROM users WHERE id = {i}", "parameters": []}).encode()


INFLIGHT = 10_000  # appends a producer keeps waiting at once


def fill(store: AuditStore, n: int, producers: int = 1, inflight: int = INFLIGHT) -> float:
    """Append n command events from `producers` threads as fast as possible; events/s.

    Each producer keeps at most `inflight` appends waiting (0: submits all, then waits).
    """
    per = n // producers

    def work(k: int) -> None:
        pending: collections.deque = collections.deque()
        for i in range(per):
            pending.append(store.submit("command", session=f"s{k}-{i // 50}",
                                        identity=f"agent-{k}", connection="prod",
                                        verdict="allow", rule="read-only", meta=META,
                                        payload=_payload(i)))  # fmt: skip
            if inflight and len(pending) >= inflight:
                pending.popleft().result()
        for f in pending:
            f.result()

    t = time.perf_counter()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(producers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return per * producers / (time.perf_counter() - t)


def fill_sessions(store: AuditStore, n: int, sessions: int = 1000) -> float:
    """Append n events from `sessions` coroutines on one event loop, each awaiting its own
    appends one after the other (the gateway's path); events/s."""
    per = n // sessions

    async def session(k: int) -> None:
        for i in range(per):
            await store.append("command", session=f"s{k}", identity=f"agent-{k % 10}",
                               connection="prod", verdict="allow", rule="read-only",
                               meta=META, payload=_payload(i))  # fmt: skip

    async def run() -> float:
        t = time.perf_counter()
        await asyncio.gather(*(session(k) for k in range(sessions)))
        return per * sessions / (time.perf_counter() - t)

    return asyncio.run(run())


def fill_sessions_process(
    path: Path, n: int, sessions: int = 1000, *, via: str = "append"
) -> float:
    """`fill_sessions` as the gateway runs it by default: uvloop, and the store's writer
    in its own process (`audit.writer: process`), durability full; events/s. `via`:
    "append" (each event answered with its whole record, as for session and approval
    events) or "submit_seq" (answered with its seq only: the gateway's path for the
    command event of every statement)."""
    import uvloop

    from wardgate.audit.process_store import ProcessAuditStore

    per = n // sessions

    async def run() -> float:
        store = await ProcessAuditStore.start(path, durability="full")
        try:

            async def session(k: int) -> None:
                for i in range(per):
                    if via == "submit_seq":
                        await store.submit_seq("command", f"s{k}", f"agent-{k % 10}", "prod",
                                               "allow", "read-only", META, _payload(i))  # fmt: skip
                        continue
                    await store.append("command", session=f"s{k}", identity=f"agent-{k % 10}",
                                       connection="prod", verdict="allow", rule="read-only",
                                       meta=META, payload=_payload(i))  # fmt: skip

            t = time.perf_counter()
            await asyncio.gather(*(session(k) for k in range(sessions)))
            return per * sessions / (time.perf_counter() - t)
        finally:
            await store.aclose()

    return uvloop.run(run())


def baseline_sqlite(tmp: Path, n: int) -> float:
    conn = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE ev (seq INTEGER PRIMARY KEY, time TEXT, identity TEXT, "
                 "kind TEXT, meta TEXT, payload BLOB)")  # fmt: skip
    meta = json.dumps(META)
    t = time.perf_counter()
    for start in range(0, n, 4096):
        rows = [(i, "2026-11-26T10:22:01.123456Z", "agent-0", "command", meta, _payload(i))
                for i in range(start, min(n, start + 4096))]  # fmt: skip
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO ev VALUES (?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t)
    conn.close()
    return rate


def latency_at(store: AuditStore, rate: float, seconds: float) -> list[float]:
    """Append latencies (ms) of a paced producer at `rate` events/s."""
    out: list[float] = []
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        t = time.perf_counter()
        store.append_sync("command", identity="agent-lat", connection="prod", verdict="allow",
                          rule="read-only", meta=META, payload=_payload(i))  # fmt: skip
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--verify-events", type=int, default=1_000_000)
    ap.add_argument("--bundle-events", type=int, default=100_000)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    a = ap.parse_args()
    rows: list[tuple[str, str, str, str]] = []

    def row(what: str, value: str, target: str, ok: bool | None) -> None:
        rows.append((what, value, target, "-" if ok is None else ("yes" if ok else "NO")))
        print(f"  {what}: {value}", flush=True)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = baseline_sqlite(tmp, a.events)
        row("baseline: raw SQLite executemany, FULL", f"{base:,.0f} rows/s", "-", None)
        store = AuditStore.open(tmp / "append.db", durability="full")
        rate = fill(store, a.events)
        row(f"append {a.events:,} events, durability full, 1 producer", f"{rate:,.0f} events/s "
            f"({rate / base:.2f}x baseline)", ">= 20,000 events/s", rate >= 20_000)  # fmt: skip
        rate4 = fill(store, a.events, producers=4)
        row(f"append {a.events:,} events, durability full, 4 producers", f"{rate4:,.0f} events/s",
            ">= 20,000 events/s", rate4 >= 20_000)  # fmt: skip
        rate_all = fill(store, a.events, inflight=0)
        row(f"append {a.events:,} events, 1 producer, all submitted first",
            f"{rate_all:,.0f} events/s", "-", None)  # fmt: skip
        rate_loop = fill_sessions(store, a.events)
        row(f"append {a.events:,} events from 1,000 sessions on the event loop",
            f"{rate_loop:,.0f} events/s", ">= 20,000 events/s", rate_loop >= 20_000)  # fmt: skip
        runs = sorted(
            fill_sessions_process(tmp / f"seq{i}.db", a.events, via="submit_seq") for i in range(3)
        )
        row(f"append {a.events:,} events from 1,000 sessions, writer process (the gateway's "
            "default), as the gateway appends a statement's command event (reply: its seq), "
            "median of 3", f"{runs[1]:,.0f} events/s ({runs[0]:,.0f}-{runs[2]:,.0f})",
            ">= 20,000 events/s", runs[1] >= 20_000)  # fmt: skip
        runs = sorted(fill_sessions_process(tmp / f"proc{i}.db", a.events) for i in range(3))
        row(f"append {a.events:,} events from 1,000 sessions, writer process, each answered "
            "with its whole record (session and approval events), median of 3",
            f"{runs[1]:,.0f} events/s ({runs[0]:,.0f}-{runs[2]:,.0f})", "-", None)  # fmt: skip
        lat = latency_at(store, 1000, a.latency_seconds)
        row("append latency at 1,000 events/s (p50 / p99)",
            f"{pct(lat, 50):.2f} / {pct(lat, 99):.2f} ms", "p99 < 5 ms", pct(lat, 99) < 5)  # fmt: skip
        size = store.size()
        t = time.perf_counter()
        k = 2000
        for i in range(k):
            seq = (i * 7919) % size
            store.inclusion_proof(seq, size)
        per = (time.perf_counter() - t) / k * 1000
        row(f"inclusion proof in a {size:,}-event log (read + build)", f"{per:.3f} ms",
            "< 1 ms", per < 1)  # fmt: skip
        store.close()

        ring = init_keyring(tmp / "cp.key", ORIGIN)
        vstore = AuditStore.open(tmp / "verify.db", durability="normal")
        cp = Checkpointer(vstore, ring, ORIGIN)
        done = 0
        step = max(1, a.verify_events // 20)
        while done < a.verify_events:
            fill(vstore, min(step, a.verify_events - done), producers=2)
            done = vstore.size()
            cp.checkpoint_now()
        vstore.close()
        t = time.perf_counter()
        rep = verify_store(tmp / "verify.db", ring.public_keys())
        dt = time.perf_counter() - t
        assert rep.ok, rep.failures[:5]
        row(f"`wardgate verify` of {done:,} events", f"{dt:.1f} s", "< 20 s for 1,000,000",
            dt * 1_000_000 / done < 20)  # fmt: skip

        vstore = AuditStore.open(tmp / "verify.db", read_only=True)
        n = a.bundle_events
        since = vstore.event(0).time
        until_ev = vstore.event(min(n, done - 1))
        t = time.perf_counter()
        res = export_bundle(vstore, ring, ORIGIN, tmp / "b.zip",
                            {"since": since, "until": until_ev.time})  # fmt: skip
        dt_exp = time.perf_counter() - t
        vstore.close()
        row(f"evidence export of {res.events:,} events ({res.bytes / 1e6:.1f} MB)",
            f"{dt_exp:.1f} s", "< 30 s for 100,000", dt_exp * 100_000 / res.events < 30)  # fmt: skip
        t = time.perf_counter()
        brep = verify_bundle(tmp / "b.zip")
        dt_ver = time.perf_counter() - t
        assert brep.ok, brep.failures[:5]
        row(f"evidence verify of {res.events:,} events", f"{dt_ver:.1f} s",
            "< 10 s for 100,000", dt_ver * 100_000 / res.events < 10)  # fmt: skip

    print("\n| measurement | result | target | met |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
