"""Store layout 3: no per-event session, time or payload-hash index; reads give the same
answers through seq bounds; a layout 2 store (made by a generator below) migrates."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wardgate.audit.canonical import event_body, leaf_hash, sha256_hex
from wardgate.audit.checkpoint import Checkpointer, checkpoint_body, sign_note
from wardgate.audit.group_commit import utc_now
from wardgate.audit.keys import init_keyring
from wardgate.audit.layout import hkey, layout_version, read_layout, seq_at_time, tiles_from_leaves
from wardgate.audit.merkle import MemoryTree, MerkleFrontier, verify_inclusion
from wardgate.audit.retention import apply_retention
from wardgate.audit.store import AuditStore
from wardgate.audit.verify import verify_store

ORIGIN = "wardgate.test/log"

# The schema of layout 2, as the previous version wrote it.
V2_SCHEMA = """
CREATE TABLE events (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, session TEXT,
    identity TEXT, connection TEXT, kind TEXT NOT NULL, verdict TEXT, rule TEXT,
    payload_hash TEXT, meta TEXT NOT NULL, body BLOB NOT NULL, leaf BLOB NOT NULL);
CREATE INDEX events_identity ON events(identity);
CREATE INDEX events_session ON events(session);
CREATE INDEX events_time ON events(time);
CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL,
    created TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE payload_rows (seq INTEGER PRIMARY KEY, hkey INTEGER NOT NULL, hash TEXT NOT NULL,
    data BLOB, purged TEXT);
CREATE INDEX payload_rows_hkey ON payload_rows(hkey);
CREATE TABLE tiles (level INTEGER NOT NULL, idx INTEGER NOT NULL, hashes BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
"""


def _v2_store(path: Path, ring, n: int, *, shuffled_times: bool = False) -> list[bytes]:
    """A layout 2 store of n events in 3 sessions (payloads shared by 7 events each, the
    payload of event 4 purged by a recorded retention), checkpointed at n; returns the
    leaf hashes. `shuffled_times`: two neighbouring events with times out of seq order."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V2_SCHEMA)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    leaves = []
    conn.execute("BEGIN")
    for i in range(n):
        sess = f"s{i % 3}"
        kind, meta, payload = "command", {"i": i}, b"SELECT %d" % (i % 7 if i != 4 else 1000)
        if i < 3:
            kind, payload = "session_start", None
        elif i == n - 1:
            kind, payload = "retention_purge", None
            meta = {"cutoff": "2026-01-01T00:00:00.000005Z", "older_than": "1d"}  # to event 4
        t = i + 1 if shuffled_times and i == 10 else i - 1 if shuffled_times and i == 11 else i
        time = f"2026-01-01T00:00:{t // 1000:02d}.{t % 1000:06d}Z"
        ph = sha256_hex(payload) if payload is not None else None
        f = {"seq": i, "time": time, "session": sess, "identity": f"ci{i % 2}",
             "connection": "db", "kind": kind, "verdict": "allow" if i % 5 else "deny",
             "rule": "r", "payload_hash": ph, "meta": meta}  # fmt: skip
        body = event_body(f)
        leaf = leaf_hash(body)
        leaves.append(leaf)
        conn.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (i, time, sess, f["identity"], "db", kind, f["verdict"], "r", ph,
             body[body.index(b'"meta":') + 7 : body.index(b',"payload_hash"')].decode(),
             body, leaf),
        )  # fmt: skip
        if payload is not None:
            purged = i == 4
            conn.execute(
                "INSERT INTO payload_rows VALUES (?,?,?,?,?)",
                (i, hkey(i, ph), ph, None if purged else payload, "2026-02-01" if purged else None),
            )
    conn.executemany("INSERT INTO tiles VALUES (?,?,?)", list(tiles_from_leaves(leaves)))
    root = MemoryTree(leaves).root()
    note = sign_note(checkpoint_body(ORIGIN, n, root), ring)
    conn.execute("INSERT INTO checkpoints VALUES (?,?,?,?)", (n, root, note, utc_now()))
    conn.execute("COMMIT")
    conn.close()
    return leaves


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {n for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}  # fmt: skip
    finally:
        conn.close()


def test_layout2_store_reads_read_only(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    leaves = _v2_store(tmp_path / "old.db", ring, 700)
    rep = verify_store(tmp_path / "old.db", ring.public_keys())
    assert rep.ok, rep.failures
    assert rep.lines()[:2] == ["700/700 events valid", "1/1 checkpoints valid"]
    ro = AuditStore.open(tmp_path / "old.db", read_only=True)
    mem = MemoryTree(leaves)
    assert ro.root() == mem.root() and ro.root(513) == mem.root(513)
    assert verify_inclusion(leaves[600], 600, 700, ro.inclusion_proof(600), mem.root())
    assert ro.payload(sha256_hex(b"SELECT 3")) == b"SELECT 3"  # by hash, bucketed index
    assert [e.seq for e in ro.events(session="s1", limit=3)] == [1, 4, 7]
    assert [s.statements for s in ro.sessions()] == [232, 232, 232]
    ro.close()
    conn = sqlite3.connect(tmp_path / "old.db")
    assert layout_version(conn) == 2
    conn.close()


def test_layout2_store_migrates_on_open(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    leaves = _v2_store(tmp_path / "old.db", ring, 700)
    s = AuditStore.open(tmp_path / "old.db")
    mem = MemoryTree(leaves)
    assert s.size() == 700 and s.root() == mem.root()
    rec = s.append_sync("after", session="s2", payload=b"SELECT 3")  # shared with older events
    mem.append(leaf_hash(rec.body))
    assert s.root() == mem.root()
    assert s.payload(sha256_hex(b"SELECT 4")) == b"SELECT 4"
    assert s.payload(sha256_hex(b"SELECT 1000")) is None  # purged
    Checkpointer(s, ring, ORIGIN).close()  # consistent with the layout 2 checkpoint
    s.close()
    conn = sqlite3.connect(tmp_path / "old.db")
    assert layout_version(conn) == 3
    assert read_layout(conn).time_ordered
    assert [r[1] for r in conn.execute("PRAGMA table_info(payload_rows)")] == [
        "seq", "hash", "data", "purged"]  # fmt: skip
    assert conn.execute("SELECT data, purged FROM payload_rows WHERE seq = 4").fetchone() == (
        None, "2026-02-01")  # fmt: skip
    conn.close()
    assert _indexes(tmp_path / "old.db") == {
        "events_identity", "events_session_start", "events_session_end"}  # fmt: skip
    rep = verify_store(tmp_path / "old.db", ring.public_keys())
    assert rep.ok, rep.failures
    assert rep.lines()[:2] == ["701/701 events valid", "2/2 checkpoints valid"]
    assert rep.payloads_purged == 1


def test_layout2_store_with_times_out_of_order_keeps_its_time_index(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    _v2_store(tmp_path / "old.db", ring, 40, shuffled_times=True)
    AuditStore.open(tmp_path / "old.db").close()
    assert "events_time" in _indexes(tmp_path / "old.db")
    s = AuditStore.open(tmp_path / "old.db", read_only=True)
    assert not s._time_ordered
    # event 11 (time of 10) is before event 10 (time of 11): a seq bound would lose it
    got = [e.seq for e in s.events(since="2026-01-01T00:00:00.000010Z",
                                   until="2026-01-01T00:00:00.000012Z")]  # fmt: skip
    assert got == [10, 11]
    s.close()


def _filled(tmp_path: Path) -> tuple[AuditStore, list]:
    """A layout 3 store: 6 sessions over 3 identities, some events without a session,
    several group commits (times repeat within one)."""
    s = AuditStore.open(tmp_path / "log.db")
    futs = []
    for k in range(6):
        s.append_sync("session_start", session=f"S{k}", identity=f"id{k % 3}", connection="db",
                      meta={"protocol": "postgres"})  # fmt: skip
        for i in range(40):
            futs.append(s.submit("command", session=f"S{k}", identity=f"id{k % 3}",
                                 verdict=("allow", "deny", "review")[i % 3],
                                 payload=b"q%d" % (i % 5)))  # fmt: skip
            futs.append(s.submit("result", session=f"S{k}", identity=f"id{k % 3}",
                                 payload=b"r%d-%d" % (k, i)))  # fmt: skip
            if i % 9 == 0:
                futs.append(s.submit("note", identity="ops"))
                for f in futs:
                    f.result()
        if k % 2 == 0:
            s.append_sync("session_end", session=f"S{k}", meta={"reason": "client closed"})
    for f in futs:
        f.result()
    return s, list(s.events())


def test_time_and_session_filters_equal_a_full_scan(tmp_path: Path) -> None:
    s, every = _filled(tmp_path)
    assert s._version == 3 and s._time_ordered
    times = sorted({e.time for e in every})
    assert len(times) > 10
    cases = [(times[3], times[9]), (times[0], None), (None, times[5]), (times[-1], None),
             ("2000-01-01T00:00:00.000000Z", "2000-01-02T00:00:00.000000Z"),
             (times[-1] + "9", None), (times[4], times[4])]  # fmt: skip
    for since, until in cases:
        for ident in (None, "id1"):
            want = [e.seq for e in every if (since is None or e.time >= since)
                    and (until is None or e.time < until)
                    and (ident is None or e.identity == ident)]  # fmt: skip
            got = [e.seq for e in s.events(since=since, until=until, identity=ident)]
            assert got == want, (since, until, ident)
    for sess in ("S0", "S3", "nope", "S"):
        assert [e.seq for e in s.events(session=sess)] == [
            e.seq for e in every if e.session == sess]  # fmt: skip
    s.close()


def test_sessions_and_open_sessions_count_as_before(tmp_path: Path) -> None:
    s, every = _filled(tmp_path)
    got = s.sessions()
    assert [x.session for x in got] == [f"S{k}" for k in range(6)]
    for x in got:
        cmds = [e for e in every if e.session == x.session and e.kind == "command"]
        assert (x.statements, x.allowed, x.denied, x.reviewed) == (
            len(cmds),
            *(sum(e.verdict == v for e in cmds) for v in ("allow", "deny", "review")),
        )
        assert (x.end_reason == "client closed") == (x.session in {"S0", "S2", "S4"})
        assert x.protocol == "postgres"
    assert [x.session for x in s.sessions(identity="id1")] == ["S1", "S4"]
    later = next(e for e in every if e.kind == "session_start" and e.session == "S3")
    assert [x.session for x in s.sessions(since=later.time)] == ["S3", "S4", "S5"]
    assert [x[0] for x in s.open_sessions()] == ["S1", "S3", "S5"]
    s.close()


def test_payload_by_hash_through_the_events_seq_and_by_scan(tmp_path: Path) -> None:
    s = AuditStore.open(tmp_path / "log.db")
    old = s.append_sync("command", payload=b"SELECT 1")
    s.append_sync("command", payload=b"other")
    s.close()
    s = AuditStore.open(tmp_path / "log.db")
    assert s._payload_seqs == {}
    assert s.payload(old.payload_hash) == b"SELECT 1"  # no event read yet: a scan
    assert s.event_payload(old.seq, old.payload_hash) == b"SELECT 1"
    assert s.event_payload(old.seq + 1, old.payload_hash) is None  # that event's is other
    # the older copy purged: a later event with the same payload keeps its own
    apply_retention(s, "1s", now=datetime.now(UTC) + timedelta(seconds=1))
    assert s.payload(old.payload_hash) is None
    new = s.append_sync("command", payload=b"SELECT 1")
    assert [e.seq for e in s.events()][-1] == new.seq  # hands out new (memo: newest seq)
    assert s.payload(old.payload_hash) == b"SELECT 1"
    assert s.event(old.seq) is not None  # memo now points at the purged copy
    assert s.payload(old.payload_hash) == b"SELECT 1"  # falls back to the kept copy
    assert s.event_payload(old.seq, old.payload_hash) is None
    s.close()


def test_retention_on_layout3_verifies_as_purged(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    s = AuditStore.open(tmp_path / "log.db")
    for i in range(300):
        s.submit("command", payload=b"SELECT %d" % i)
    s.append_sync("command", payload=b"last")
    apply_retention(s, "1s", now=datetime.now(UTC) + timedelta(seconds=1))
    Checkpointer(s, ring, ORIGIN).close()
    s.close()
    rep = verify_store(tmp_path / "log.db", ring.public_keys())
    assert rep.ok, rep.failures
    assert rep.payloads_purged == 301


def test_seq_at_time_bisects_and_steps_over_gaps(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, time TEXT)")
    assert seq_at_time(conn, "b") == 0
    rows = [(i, t) for i, t in enumerate("aabbbcdd") if i not in (3, 4)]  # gap at 3, 4
    conn.executemany("INSERT INTO events VALUES (?,?)", rows)
    # events before the answer are earlier than t, the events from it on are not
    assert [seq_at_time(conn, t) for t in ("", "a", "b", "bb", "c", "d", "e")] == [
        0, 0, 2, 3, 3, 6, 8]  # fmt: skip
    conn.close()


def test_fresh_store_says_time_ordered(tmp_path: Path) -> None:
    AuditStore.open(tmp_path / "log.db").close()
    conn = sqlite3.connect(tmp_path / "log.db")
    assert read_layout(conn).version == 3 and read_layout(conn).time_ordered
    conn.close()


@pytest.mark.parametrize("n", [1, 255, 256, 257, 513])
def test_proofs_off_tile_boundaries_from_another_connection(tmp_path: Path, n: int) -> None:
    s = AuditStore.open(tmp_path / "log.db")
    for i in range(n):
        s.submit("e", meta={"i": i})
    s.append_sync("last")
    ro = AuditStore.open(tmp_path / "log.db", read_only=True)  # as the CLI reads
    mem = MemoryTree(bytes(leaf_hash(e.body)) for e in ro.events())
    for size in {1, n // 2 + 1, n, n + 1}:
        assert ro.root(size) == mem.root(size)
        assert verify_inclusion(mem.get_nodes([(0, size - 1)])[(0, size - 1)], size - 1, size,
                                ro.inclusion_proof(size - 1, size), mem.root(size))  # fmt: skip
    assert MerkleFrontier.load(ro, n + 1).root() == mem.root()
    ro.close()
    s.close()
