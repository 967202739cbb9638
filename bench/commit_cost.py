"""What one small group commit costs SQLite, by the number of B-trees it touches.

Theory of operation: the gateway commits a few events at a time (a statement's command
event, often with the previous statement's result event), so the audit writer's CPU is
dominated by the per-commit cost, and that grows with every table and index a commit
modifies (each modified page becomes a WAL frame). This measures 2-event commits in
WAL mode, synchronous=NORMAL, for 1 to 4 B-trees (rowid table, then session, identity
and time indexes) and two page sizes, in thread CPU time (other load does not count).
A diagnostic for choosing a store layout, not part of `make bench`.

    python bench/commit_cost.py [--commits 3000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=3000)
    args = ap.parse_args()
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
