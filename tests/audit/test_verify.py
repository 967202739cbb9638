"""Verify: a clean log passes; each kind of tampering from issue 5 is caught and named."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wardgate.audit.canonical import event_body, leaf_hash
from wardgate.audit.checkpoint import Checkpointer, checkpoint_body, sign_note
from wardgate.audit.keys import init_keyring
from wardgate.audit.retention import apply_retention, parse_window
from wardgate.audit.store import AuditStore
from wardgate.audit.verify import verify_store

ORIGIN = "wardgate.test/log"


def _fill(store: AuditStore, start: int, n: int) -> None:
    for i in range(start, start + n):
        store.append_sync(
            "command", session=f"s{i % 3}", identity="ci-deployer", connection="prod",
            verdict="allow", rule="p/r", meta={"index": i}, payload=f"SELECT {i}".encode(),
        )  # fmt: skip


def _copy(src: Path, dst: Path) -> None:
    """Consistent copy of a live WAL database (what a backup or snapshot would hold)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory):
    """A log of 30 events, checkpoints at 10, 20, 30, and a copy taken at size 20."""
    d = tmp_path_factory.mktemp("golden")
    store = AuditStore.open(d / "log.db")
    ring = init_keyring(d / "cp.key", ORIGIN)
    cp = Checkpointer(store, ring, ORIGIN, publish=d / "published.txt")
    _fill(store, 0, 10)
    cp.checkpoint_now()
    _fill(store, 10, 10)
    cp.checkpoint_now()
    _copy(d / "log.db", d / "old.db")
    _fill(store, 20, 10)
    cp.close()
    store.close()
    return d, ring.public_keys()


@pytest.fixture
def case(golden, tmp_path: Path):
    d, keys = golden
    _copy(d / "log.db", tmp_path / "log.db")
    conn = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
    yield conn, tmp_path / "log.db", keys, d / "published.txt"
    conn.close()


def _verify(db: Path, keys, published: Path | None = None) -> list[str]:
    rep = verify_store(db, keys, published=published)
    return rep.failures


def test_clean_log_verifies(case) -> None:
    conn, db, keys, pub = case
    rep = verify_store(db, keys, published=pub)
    assert rep.ok, rep.failures
    assert rep.lines()[:3] == [
        "30/30 events valid", "3/3 checkpoints valid", "3/3 published checkpoints agree",
    ]  # fmt: skip


def test_edit_a_field(case) -> None:
    conn, db, keys, pub = case
    conn.execute("UPDATE events SET identity = 'someone-else' WHERE seq = 5")
    assert _verify(db, keys) == ["event 5: fields do not match the hashed body"]


def test_edit_body_and_leaf_consistently(case) -> None:
    conn, db, keys, pub = case
    _rewrite(conn, 5, identity="someone-else")
    fails = _verify(db, keys)
    assert "checkpoint at size 10: root does not match the log" in fails
    # (30 events fill no tile: every interior node is recomputed from the leaves, so only
    # the checkpoints can disagree; test_tampered_tile covers stored interior nodes)


def test_edit_a_payload(case) -> None:
    conn, db, keys, pub = case
    conn.execute("UPDATE payload_rows SET data = 'SELECT evil' WHERE seq = 7")
    assert _verify(db, keys) == ["event 7: payload does not match its hash"]


def test_delete_an_event(case) -> None:
    conn, db, keys, pub = case
    conn.execute("DELETE FROM events WHERE seq BETWEEN 12 AND 14")
    fails = _verify(db, keys)
    assert fails[0] == "events 12-14 missing"
    assert "checkpoint at size 20: root does not match the log" in fails


def test_delete_a_payload_outside_retention(case) -> None:
    conn, db, keys, pub = case
    conn.execute("DELETE FROM payload_rows WHERE seq = 3")
    conn.execute("UPDATE payload_rows SET data = NULL, purged = 'x' WHERE seq = 4")
    assert _verify(db, keys) == [
        "event 3: payload missing", "event 4: payload purged outside recorded retention",
    ]  # fmt: skip


def test_replace_a_payload_and_its_hash_column(case) -> None:
    conn, db, keys, pub = case
    evil = b"SELECT evil"
    conn.execute(
        "UPDATE payload_rows SET data = ?, hash = ? WHERE seq = 8",
        (evil, hashlib.sha256(evil).hexdigest()),
    )
    assert _verify(db, keys) == ["event 8: payload does not match its hash"]


def _rewrite(conn: sqlite3.Connection, at: int, **changes) -> None:
    """Rewrite an event's columns, body and leaf consistently (a careful attacker)."""
    cols = "seq, time, session, identity, connection, kind, verdict, rule, payload_hash, meta"
    row = conn.execute(f"SELECT {cols} FROM events WHERE seq = ?", (at,)).fetchone()
    import json

    f = dict(zip(cols.split(", "), row, strict=True))
    f["meta"] = json.loads(f["meta"])
    f.update(changes)
    body = event_body(f)
    conn.execute(
        "UPDATE events SET seq=?, time=?, session=?, identity=?, connection=?, kind=?, verdict=?,"
        " rule=?, payload_hash=?, meta=?, body=?, leaf=? WHERE seq = ?",
        (*[f[c] if c != "meta" else json.dumps(f["meta"]) for c in cols.split(", ")],
         body, leaf_hash(body), at),
    )  # fmt: skip


def _move(conn: sqlite3.Connection, old: int, new: int) -> None:
    """Renumber an event, and its payload row with it (payload rows are keyed by seq)."""
    conn.execute("UPDATE events SET seq = ? WHERE seq = ?", (new, old))
    conn.execute("UPDATE payload_rows SET seq = ? WHERE seq = ?", (new, old))


def _swap(conn: sqlite3.Connection, a: int, b: int) -> None:
    _move(conn, a, -1)
    _move(conn, b, a)
    _move(conn, -1, b)


def test_swap_two_events(case) -> None:
    conn, db, keys, pub = case
    _swap(conn, 3, 4)
    fails = _verify(db, keys)
    assert fails[:2] == [
        "event 3: fields do not match the hashed body", "event 4: fields do not match the hashed body",
    ]  # fmt: skip
    assert "checkpoint at size 10: root does not match the log" in fails


def test_swap_two_events_and_fix_bodies(case) -> None:
    conn, db, keys, pub = case
    _swap(conn, 3, 4)
    _rewrite(conn, 3, seq=3)
    _rewrite(conn, 4, seq=4)
    fails = _verify(db, keys)
    assert not any(f.startswith("event ") for f in fails)  # each row is self-consistent...
    assert "checkpoint at size 10: root does not match the log" in fails  # ...the tree is not


def test_insert_an_event(case) -> None:
    conn, db, keys, pub = case
    for seq in range(29, 11, -1):
        _move(conn, seq, seq + 1)
    conn.execute(
        "INSERT INTO events SELECT 12, time, session, 'intruder', connection, kind, verdict,"
        " rule, payload_hash, meta, body, leaf FROM events WHERE seq = 11"
    )
    conn.execute(
        "INSERT INTO payload_rows SELECT 12, hash, data, purged FROM payload_rows WHERE seq = 11"
    )
    fails = _verify(db, keys)
    assert "event 12: fields do not match the hashed body" in fails
    assert "event 13: fields do not match the hashed body" in fails
    assert "checkpoint at size 20: root does not match the log" in fails


def test_truncate_the_log(case) -> None:
    conn, db, keys, pub = case
    conn.execute("DELETE FROM events WHERE seq >= 25")
    fails = _verify(db, keys)
    assert fails == ["stored tree nodes do not match the events",
                     "checkpoint at size 30: log has only 25 events (truncated or rolled back)"] or (
        "checkpoint at size 30: log has only 25 events (truncated or rolled back)" in fails
    )  # fmt: skip


def test_replace_a_checkpoint(case, tmp_path: Path) -> None:
    conn, db, keys, pub = case
    forger = init_keyring(tmp_path / "forger.key", ORIGIN)
    note = sign_note(checkpoint_body(ORIGIN, 20, b"\x11" * 32), forger)
    conn.execute("UPDATE checkpoints SET note = ?, root = ? WHERE size = 20", (note, b"\x11" * 32))
    assert _verify(db, keys) == ["checkpoint at size 20: signature invalid"]


def test_replace_checkpoint_root_column(case) -> None:
    conn, db, keys, pub = case
    conn.execute("UPDATE checkpoints SET root = zeroblob(32) WHERE size = 10")
    assert _verify(db, keys) == ["checkpoint at size 10: row does not match its signed note"]


def test_roll_back_to_older_copy(golden) -> None:
    d, keys = golden
    assert verify_store(d / "old.db", keys).ok  # self-consistent on its own...
    fails = _verify(d / "old.db", keys, published=d / "published.txt")
    assert fails == [
        "published checkpoint 3 (size 30): log has only 20 events (truncated or rolled back)"
    ]


def test_rewrite_behind_published_checkpoint(case, tmp_path: Path) -> None:
    """Whoever controls the store AND the key re-signs a rewritten log: publishing catches it."""
    conn, db, keys, pub = case
    conn.close()
    d = db.parent
    # rebuild a different 30-event log signed with the same keyring (the insider case)
    store = AuditStore.open(d / "rewritten.db")
    ring = init_keyring(d / "same.key", ORIGIN)
    _fill(store, 100, 30)
    Checkpointer(store, ring, ORIGIN).close()
    store.close()
    fails = _verify(d / "rewritten.db", [*keys, ring.active], published=pub)
    assert fails == [f"published checkpoint {i} (size {s}): root does not match the log"
                     for i, s in ((1, 10), (2, 20), (3, 30))]  # fmt: skip


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory):
    """A log of 700 events (two full level-0 tiles, a stored edge tile of level 1)."""
    d = tmp_path_factory.mktemp("tiled")
    store = AuditStore.open(d / "log.db")
    ring = init_keyring(d / "cp.key", ORIGIN)
    cp = Checkpointer(store, ring, ORIGIN)
    for i in range(700):
        store.submit("command", identity="ci", meta={"i": i}, payload=b"p%d" % (i % 7))
    store.append_sync("last")
    cp.close()
    store.close()
    return d, ring.public_keys()


def _tiled_case(tiled, tmp_path: Path) -> tuple[sqlite3.Connection, Path, list]:
    d, keys = tiled
    _copy(d / "log.db", tmp_path / "log.db")
    return sqlite3.connect(tmp_path / "log.db", isolation_level=None), tmp_path / "log.db", keys


def _patch_tile(conn: sqlite3.Connection, level: int, idx: int, at: int, data: bytes) -> None:
    (blob,) = conn.execute(
        "SELECT hashes FROM tiles WHERE level = ? AND idx = ?", (level, idx)
    ).fetchone()
    blob = blob[:at] + data + blob[at + len(data) :]
    conn.execute("UPDATE tiles SET hashes = ? WHERE level = ? AND idx = ?", (blob, level, idx))


def test_tiled_log_verifies(tiled) -> None:
    d, keys = tiled
    rep = verify_store(d / "log.db", keys)
    assert rep.ok, rep.failures
    assert rep.lines()[0] == "701/701 events valid"
    conn = sqlite3.connect(d / "log.db")
    assert sorted(conn.execute("SELECT level, idx FROM tiles")) == [(0, 0), (0, 1), (1, 0)]
    conn.close()


def test_tampered_tile_interior_node(tiled, tmp_path: Path) -> None:
    conn, db, keys = _tiled_case(tiled, tmp_path)
    _patch_tile(conn, 0, 1, 0, b"\x22" * 32)  # node (level 1, idx 128): no proof path used it
    assert _verify(db, keys) == ["stored tree tile (0, 1) does not match the events"]


def test_tampered_tile_root_and_edge_tile(tiled, tmp_path: Path) -> None:
    conn, db, keys = _tiled_case(tiled, tmp_path)
    _patch_tile(conn, 0, 0, 254 * 32, b"\x33" * 32)  # node (8, 0): on the frontier
    _patch_tile(conn, 1, 0, 0, b"\x44" * 32)  # node (9, 0), in the stored edge tile
    fails = _verify(db, keys)
    assert "stored tree tile (0, 0) does not match the events" in fails
    assert "stored tree tile (1, 0) does not match the events" in fails
    assert "stored tree nodes do not match the events" in fails


def test_deleted_and_inserted_tiles(tiled, tmp_path: Path) -> None:
    conn, db, keys = _tiled_case(tiled, tmp_path)
    conn.execute("DELETE FROM tiles WHERE level = 0 AND idx = 1")
    conn.execute("INSERT INTO tiles VALUES (0, 7, zeroblob(8160))")
    fails = _verify(db, keys)
    assert "stored tree tile (0, 1) missing" in fails
    assert "stored tree tile (0, 7) is not part of the log" in fails


def test_retention_purge_is_not_tampering(tmp_path: Path) -> None:
    store = AuditStore.open(tmp_path / "log.db")
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    _fill(store, 0, 5)
    store.append_sync("command", payload=b"SELECT 0")  # same payload as event 0, but new
    future = datetime.now(UTC) + timedelta(days=1)
    res = apply_retention(store, "1d", now=future - timedelta(microseconds=0))
    assert res.payloads_purged == 5  # five distinct payloads; "SELECT 0" is used twice
    Checkpointer(store, ring, ORIGIN).close()
    store.close()
    rep = verify_store(tmp_path / "log.db", ring.public_keys())
    assert rep.ok, rep.failures
    assert rep.payloads_purged == 6  # events whose payload is gone
    assert "6 payloads purged by retention (not tampering)" in rep.lines()


def test_parse_window() -> None:
    assert parse_window("90d") == timedelta(days=90)
    assert parse_window("12h") == timedelta(hours=12)
    with pytest.raises(ValueError):
        parse_window("90 days")


def test_retention_purges_only_events_older_than_the_cutoff(tmp_path: Path) -> None:
    import time

    store = AuditStore.open(tmp_path / "log.db")
    for i in range(3):
        store.append_sync("command", payload=f"old {i}".encode())
    time.sleep(0.05)
    cutoff = datetime.now(UTC)
    time.sleep(0.05)
    for i in range(3):
        store.append_sync("command", payload=f"new {i}".encode())
    res = apply_retention(store, "1s", now=cutoff + timedelta(seconds=1))
    assert res.payloads_purged == 3
    assert [store.payload(store.event(s).payload_hash) is None for s in range(6)] == [
        True, True, True, False, False, False,
    ]  # fmt: skip
    store.close()
