"""What one small group commit costs SQLite, by the number of B-trees it touches.

Theory of operation: the gateway commits a few events at a time (a statement's command
event, often with the previous statement's result event), so the audit writer's CPU is
dominated by the per-commit cost, and that grows with every table and index a commit
modifies (each modified page becomes a WAL frame). This measures 2-event commits in
WAL mode, synchronous=NORMAL, for 1 to 4 B-trees (rowid table, then session, identity
and time indexes) and two page sizes, in thread CPU time (other load does not count).
A diagnostic for choosing a store layout, not part of `make bench`.

`--writer` measures the store's own writer instead: CPU of `GroupCommitWriter`'s commit of
one batch (rows, tree, COMMIT with synchronous=FULL, WAL auto-checkpoints when they fall
due, resolving the futures) per event, at batch sizes 2, 8, 16 and 1,000, on a store that
already holds `--prefill` events; the gateway's command/result pairs as events.

    python bench/commit_cost.py [--commits 3000] [--writer [--prefill 100000]]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

BODY = b"x" * 330  # about a pgbench command event's canonical body
PAYLOAD = b"y" * 90  # its statement payload


def commit_cost(trees: int, page_size: int, commits: int) -> float:
    """Median-ready figure: us of thread CPU per 2-event commit."""
    path = os.path.join(tempfile.mkdtemp(prefix="wg-commit-"), "a.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE e(seq INTEGER PRIMARY KEY, time TEXT, session TEXT, identity TEXT, "
        "body BLOB, payload BLOB)"
    )
    for i, col in enumerate(["session", "identity", "time"][: trees - 1]):
        conn.execute(f"CREATE INDEX i{i} ON e({col})")
    seq = 0
    t0 = time.thread_time()
    for i in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(2):
            conn.execute(
                "INSERT INTO e VALUES (?,?,?,?,?,?)",
                (seq, f"2026-11-26T14:00:00.{i:06d}Z", f"session-{i % 8}", "ci-bot", BODY, PAYLOAD),
            )
            seq += 1
        conn.execute("COMMIT")
    cost = (time.thread_time() - t0) / commits * 1e6
    conn.close()
    return cost


def layout2_cost(commits: int) -> float:
    """The same 2-event commits into wardgate's own schema (events with its three
    indexes, payload_rows with its hash index), rows shaped as the writer makes them."""
    import hashlib

    from wardgate.audit.layout import SCHEMA

    path = os.path.join(tempfile.mkdtemp(prefix="wg-commit-"), "a.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(payload_rows)")]
    insert_payload = (
        f"INSERT INTO payload_rows({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"
    )
    seq = 0
    t0 = time.thread_time()
    for i in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        for k in range(2):
            digest = hashlib.sha256(PAYLOAD + bytes([k, i % 256])).hexdigest()
            conn.execute(
                "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (seq, f"2026-11-26T14:00:00.{i:06d}Z", f"session-{i % 8}", "ci-bot", "orders",
                 "command", "allow", "baseline/allow", digest, '{"index":0}', BODY,
                 hashlib.sha256(BODY).digest()),
            )  # fmt: skip
            row = {
                "seq": seq,
                "hkey": (seq >> 16) << 32 | int(digest[:8], 16),
                "hash": digest,
                "data": PAYLOAD,
                "stored": "2026-11-26T14:00:00Z",
            }
            conn.execute(insert_payload, [row.get(c) for c in cols])
            seq += 1
        conn.execute("COMMIT")
    cost = (time.thread_time() - t0) / commits * 1e6
    conn.close()
    return cost


META_CMD = {"index": 0, "via": "simple", "kinds": ["select"], "objects": ["public.pgbench_accounts"],
            "reason": "allowed by rule read-only", "fingerprint": "9f2c51d0e3a4b7c8"}  # fmt: skip
META_RES = {"command_seq": 0, "tag": "SELECT 1", "rows": 1, "masked": {}}


def _requests(n: int, start: int) -> list:
    """n events shaped as the gateway's: command (statement payload) then result (rows)."""
    from wardgate.audit.group_commit import AppendFuture, AppendRequest

    out = []
    for i in range(start, start + n):
        sess = f"3f1c2a9e-{i % 8:04d}-4b5e-9d61-2c0f8e7a{i % 8:04d}"
        if i % 2 == 0:
            kw = {"session": sess, "identity": "ci-bot", "connection": "orders", "verdict": "allow",
                  "rule": "read-only", "meta": META_CMD,
                  "payload": b'{"parameters":[],"text":"SELECT abalance FROM pgbench_accounts '
                             b'WHERE aid = %d;"}' % i}  # fmt: skip
        else:
            kw = {"session": sess, "identity": "ci-bot", "connection": "orders",
                  "meta": META_RES, "payload": b'[["abalance"],[["%d"]]]' % i}  # fmt: skip
        req = AppendRequest.from_fields("command" if i % 2 == 0 else "result", kw)
        req.future = AppendFuture()
        out.append(req)
    return out


def writer_cost(batch: int, events: int, prefill: int) -> float:
    """us of CPU per event of the store writer committing batches of `batch` events.

    The commit function of the real writer runs on this thread (the writer thread is not
    started), so thread CPU time is exactly the writer's work for those batches."""
    from wardgate.audit.group_commit import GroupCommitWriter
    from wardgate.audit.store import AuditStore

    path = os.path.join(tempfile.mkdtemp(prefix="wg-writer-"), "a.db")
    store = AuditStore(Path(path), "full", False)
    writer = GroupCommitWriter(store._connect_writer, "bench")
    conn = store._connect_writer()
    writer.frontier, writer.tiles, writer._last_time = store._load_state(conn)
    for start in range(0, prefill, 1000):
        writer._commit_appends(conn, _requests(1000, start))
    seq = writer.frontier.size
    commits = max(1, events // batch)
    spent = 0.0
    for k in range(commits):
        # requests are made per commit, untimed: the callers' work, and a heap as small
        # as the gateway's queue (prebuilt requests would make every GC pass scan them)
        reqs = _requests(batch, seq + k * batch)
        t0 = time.thread_time()
        writer._commit_appends(conn, reqs)
        spent += time.thread_time() - t0
        reqs[-1].future.result(0)  # committed
    cost = spent / (commits * batch) * 1e6
    conn.close()
    return cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=3000)
    ap.add_argument("--writer", action="store_true", help="the store writer per event")
    ap.add_argument("--prefill", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=8000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.writer:
        print(f"| batch (events per commit) | writer us CPU per event (median of {args.runs}) |")
        print("|---|---|")
        for batch in (2, 8, 16, 1000):
            n = max(args.events, batch * 20)
            runs = sorted(writer_cost(batch, n, args.prefill) for _ in range(args.runs))
            print(f"| {batch} | {runs[len(runs) // 2]:.1f} (min {runs[0]:.1f}) |", flush=True)
        return
    print("| B-trees touched | page size | us CPU per 2-event commit (median of 3) |")
    print("|---|---|---|")
    for trees in (1, 2, 3, 4):
        for page in (4096, 1024):
            runs = sorted(commit_cost(trees, page, args.commits) for _ in range(3))
            print(f"| {trees} | {page} | {runs[1]:.1f} |")
    runs = sorted(layout2_cost(args.commits) for _ in range(3))
    print(f"| store layout 2 (2 tables, 4 indexes) | 4096 | {runs[1]:.1f} |")


if __name__ == "__main__":
    main()
