"""Store layouts: tiles, payload rows, and a layout 1 store (before tiles) read and migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from wardgate.audit.canonical import event_body, leaf_hash, sha256_hex
from wardgate.audit.checkpoint import Checkpointer, checkpoint_body, sign_note
from wardgate.audit.group_commit import utc_now
from wardgate.audit.keys import init_keyring
from wardgate.audit.layout import (
    TILE_BYTES,
    ConnNodeReader,
    TileBuilder,
    layout_version,
    tile_slot,
    tiles_from_leaves,
)
from wardgate.audit.merkle import MemoryTree, MerkleFrontier, verify_inclusion
from wardgate.audit.store import AuditStore
from wardgate.audit.verify import verify_store

ORIGIN = "wardgate.test/log"

# The schema of layout 1, as the previous version wrote it.
V1_SCHEMA = """
CREATE TABLE events (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, session TEXT,
    identity TEXT, connection TEXT, kind TEXT NOT NULL, verdict TEXT, rule TEXT,
    payload_hash TEXT, meta TEXT NOT NULL, body BLOB NOT NULL, leaf BLOB NOT NULL);
CREATE INDEX events_identity ON events(identity);
CREATE INDEX events_session ON events(session);
CREATE INDEX events_time ON events(time);
CREATE TABLE payloads (hash TEXT PRIMARY KEY, data BLOB, stored TEXT NOT NULL, purged TEXT);
CREATE TABLE nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL,
    created TEXT NOT NULL);
"""


def _v1_store(path: Path, ring, n: int) -> list[bytes]:
    """A layout 1 store of n events (payloads shared by 7 events each, the payload of event
    0 purged by a recorded retention), checkpointed at n; returns the leaf hashes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V1_SCHEMA)
    frontier, leaves = MerkleFrontier(), []
    conn.execute("BEGIN")
    for i in range(n):
        kind, meta, payload = "command", {"i": i}, b"SELECT %d" % (i % 7 if i else 1000)
        time = f"2026-01-01T00:00:{i // 1000:02d}.{i % 1000:06d}Z"
        if i == n - 1:
            kind, payload = "retention_purge", None
            meta = {"cutoff": "2026-01-01T00:00:00.000000Z", "older_than": "1d"}
            meta["cutoff"] = "2026-01-01T00:00:00.000001Z"  # covers event 0 only
        ph = sha256_hex(payload) if payload is not None else None
        f = {"seq": i, "time": time, "session": f"s{i % 3}", "identity": "ci", "connection": "db",
             "kind": kind, "verdict": "allow", "rule": "r", "payload_hash": ph, "meta": meta}  # fmt: skip
        body = event_body(f)
        leaf = leaf_hash(body)
        leaves.append(leaf)
        conn.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (i, time, f["session"], "ci", "db", kind, "allow", "r", ph,
             body[body.index(b'"meta":') + 7 : body.index(b',"payload_hash"')].decode(),
             body, leaf),
        )  # fmt: skip
        if payload is not None:
            purged = i == 0
            conn.execute(
                "INSERT OR IGNORE INTO payloads VALUES (?,?,?,?)",
                (ph, None if purged else payload, time, "2026-02-01" if purged else None),
            )
        for level, idx, h in frontier.append(leaf)[1:]:
            conn.execute("INSERT INTO nodes VALUES (?,?,?)", (level, idx, h))
    note = sign_note(checkpoint_body(ORIGIN, n, frontier.root()), ring)
    conn.execute(
        "INSERT INTO checkpoints VALUES (?,?,?,?)",
        (n, frontier.root(), note, utc_now()),
    )
    conn.execute("COMMIT")
    conn.close()
    return leaves


def test_tile_slots_cover_every_node_once() -> None:
    seen = set()
    for level in range(1, 9):
        for idx in range(256 >> level):
            tl, n, off = tile_slot(level, idx)
            assert (tl, n) == (0, 0) and off % 32 == 0 and 0 <= off < TILE_BYTES
            seen.add(off)
    assert len(seen) == 255
    assert tile_slot(9, 0) == (1, 0, 0) and tile_slot(8, 5) == (0, 5, 254 * 32)
    assert tile_slot(16, 1) == (1, 1, 254 * 32)


def test_tiles_hold_exactly_the_complete_nodes() -> None:
    leaves = [leaf_hash(b"%d" % i) for i in range(70_000)]
    mem = MemoryTree(leaves)
    tiles = {(tl, n): blob for tl, n, blob in tiles_from_leaves(leaves)}
    # complete level-0 tiles: 273; level-1: the edge tile (rewritten as it grew); level 2: none
    assert sum(1 for tl, _ in tiles if tl == 0) == 70_000 // 256
    assert set(k for k in tiles if k[0] > 0) == {(1, 0), (1, 1)}
    for level in (1, 3, 8, 9, 12, 16):
        for idx in {0, 1, (70_000 >> level) - 1} & set(range(70_000 >> level)):
            tl, n, off = tile_slot(level, idx)
            if (tl, n) in tiles:
                got = tiles[(tl, n)][off : off + 32]
                assert got == mem.get_nodes([(level, idx)])[(level, idx)]


def test_edge_tile_reload_matches(tmp_path: Path) -> None:
    s = AuditStore.open(tmp_path / "log.db")
    for i in range(1000):
        s.submit("e", meta={"i": i})
    s.append_sync("last")
    s.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    b = TileBuilder.load(conn, 1001)
    fresh = TileBuilder()
    frontier, flat = MerkleFrontier(), []
    for (leaf,) in conn.execute("SELECT leaf FROM events ORDER BY seq"):
        frontier.append_flat(bytes(leaf), flat)
    fresh.add_flat(flat)
    fresh.take_dirty()
    assert b._edge == fresh._edge
    conn.close()


def test_payload_rows_and_lookup_by_hash(tmp_path: Path) -> None:
    s = AuditStore.open(tmp_path / "log.db")
    a = s.append_sync("c", payload=b"same")
    b = s.append_sync("c", payload=b"same")
    c = s.append_sync("c", payload=b"other")
    assert a.payload_hash == b.payload_hash
    assert s.payload(a.payload_hash) == b"same" and s.payload(c.payload_hash) == b"other"
    assert s.payload(sha256_hex(b"never stored")) is None
    assert s.payload("not hex at all") is None
    s.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    rows = conn.execute("SELECT seq, hash FROM payload_rows ORDER BY seq").fetchall()
    assert rows == [(0, a.payload_hash), (1, a.payload_hash), (2, c.payload_hash)]
    assert layout_version(conn) == 3
    # layout 3: no index on payload_rows at all, and none on events but these three
    assert (
        conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'payload_rows'"
            " AND sql IS NOT NULL"
        ).fetchall()
        == []
    )
    assert {n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")} == {
        "events_identity", "events_session_start", "events_session_end"}  # fmt: skip
    conn.close()


def test_layout1_store_reads_read_only(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    leaves = _v1_store(tmp_path / "old.db", ring, 600)
    rep = verify_store(tmp_path / "old.db", ring.public_keys())
    assert rep.ok, rep.failures
    assert rep.lines()[:2] == ["600/600 events valid", "1/1 checkpoints valid"]
    assert rep.payloads_purged == 1
    ro = AuditStore.open(tmp_path / "old.db", read_only=True)
    mem = MemoryTree(leaves)
    assert ro.root() == mem.root()
    proof = ro.inclusion_proof(345)
    assert verify_inclusion(leaves[345], 345, 600, proof, mem.root())
    assert ro.payload(sha256_hex(b"SELECT 3")) == b"SELECT 3"
    assert ro.payload(sha256_hex(b"SELECT 1000")) is None  # purged
    ro.close()
    conn = sqlite3.connect(tmp_path / "old.db")
    assert layout_version(conn) == 1
    assert ConnNodeReader(conn).get_nodes([(3, 2)]) == mem.get_nodes([(3, 2)])
    conn.close()


def test_layout1_store_migrates_on_open(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    leaves = _v1_store(tmp_path / "old.db", ring, 600)
    s = AuditStore.open(tmp_path / "old.db")
    mem = MemoryTree(leaves)
    assert s.size() == 600 and s.root() == mem.root()
    rec = s.append_sync("after", payload=b"SELECT 3")  # shared with older events
    mem.append(leaf_hash(rec.body))
    assert s.root() == mem.root()
    assert s.payload(sha256_hex(b"SELECT 4")) == b"SELECT 4"
    Checkpointer(s, ring, ORIGIN).close()  # consistent with the layout 1 checkpoint
    s.close()
    conn = sqlite3.connect(tmp_path / "old.db")
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"payloads", "nodes"}.isdisjoint(tables) and {"payload_rows", "tiles"} <= tables
    assert layout_version(conn) == 3
    # every event with a payload has its own row; event 0's stays purged
    assert conn.execute("SELECT count(*) FROM payload_rows").fetchone()[0] == 600
    assert conn.execute("SELECT data FROM payload_rows WHERE seq = 0").fetchone()[0] is None
    conn.close()
    rep = verify_store(tmp_path / "old.db", ring.public_keys())
    assert rep.ok, rep.failures
    assert rep.lines()[:2] == ["601/601 events valid", "2/2 checkpoints valid"]
    assert rep.payloads_purged == 1


def test_newer_layout_is_refused(tmp_path: Path) -> None:
    s = AuditStore.open(tmp_path / "log.db")
    s.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match="newer"):
        AuditStore.open(tmp_path / "log.db")
