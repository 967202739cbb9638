"""On-disk layout of the SQLite audit store: schema versions, migration, tiles, payload rows.

Theory of operation. The cost of a small group commit is the number of B-tree pages it
dirties (each becomes a WAL frame, fsynced at COMMIT), so layout 3 (this version) gives
each commit as few B-trees to touch as the reads allow:

- `events`: one row per leaf, seq = rowid (appends land on the rightmost page). Indexes:
  `identity` (few distinct values: a few hot pages) and two partial indexes holding only
  the `session_start` / `session_end` events by session (written once per session, not per
  event). No time index: the writer keeps `time` non-decreasing in seq (meta
  `time_ordered` = 1), so a time bound is turned into a seq bound by a binary search
  (`seq_at_time`, O(log n) point reads). A session's events are found from its
  `session_start` onward (the engines append it, durably, before any other event of the
  session).
- `payload_rows`: one row per event that has a payload, keyed by the event's seq (a
  sequential insert, no other index). A payload is found through its event's seq
  (`payload_row`); lookup by hash alone (`payload_by_hash`) scans, so the store resolves a
  hash through the seq of the event it handed out (store.py).
- `tiles`: the Merkle interior nodes in tiles of 8 levels (the C2SP tlog-tiles idea): tile
  (L, N) holds the 255 complete-subtree hashes of levels 8L+1 .. 8L+8 above the 256 hashes
  of level 8L numbered 256N .. 256N+255 (levels 1..8 above leaves 256N.. for L = 0). A
  full tile is written once; one row per 256 events. The right-edge tile of level 0 is
  never stored: its few nodes are recomputed from `events.leaf` (at most 255 leaves);
  right-edge tiles of higher levels are rewritten when they change (at most once per 512
  events). Missing nodes of a stored tile are zeros.

Layout 2 (as 3, plus `events` indexes on session and time and a bucketed hash index
`payload_rows.hkey`) and layout 1 (`payloads` keyed by hash, `nodes` keyed by (level, idx),
no `meta` table) are still read; a writer migrates either to layout 3 on open, in one
transaction. A migrated store whose times are not in seq order (never written so by
wardgate) keeps its time index and `time_ordered` = 0.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wardgate.audit.canonical import node_hash
from wardgate.audit.merkle import MerkleFrontier, NodeKey

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "StoreLayout",
    "read_layout",
    "seq_at_time",
    "TILE_BYTES",
    "TileBuilder",
    "layout_version",
    "prepare_writer",
    "hkey",
    "payload_by_hash",
    "payload_row",
    "ConnNodeReader",
    "tile_slot",
]

SCHEMA_VERSION = 3
_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    session TEXT,
    identity TEXT,
    connection TEXT,
    kind TEXT NOT NULL,
    verdict TEXT,
    rule TEXT,
    payload_hash TEXT,
    meta TEXT NOT NULL,
    body BLOB NOT NULL,
    leaf BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_identity ON events(identity);
CREATE INDEX IF NOT EXISTS events_session_start ON events(session)
    WHERE kind = 'session_start';
CREATE INDEX IF NOT EXISTS events_session_end ON events(session) WHERE kind = 'session_end';
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    created TEXT NOT NULL
);
"""
SCHEMA = (
    _EVENTS
    + """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payload_rows (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    data BLOB,
    purged TEXT
);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
"""
)

TILE_WIDTH = 256
_HASH = 32
TILE_BYTES = (TILE_WIDTH - 1) * _HASH  # levels 1..8 of a tile: 128 + 64 + ... + 1 hashes
_ZERO = bytes(_HASH)


def _as_hash_bytes(value: object) -> bytes:
    """A stored hash or tile as bytes. The writer stores BLOBs; a value of another type
    was put there by hand and reads as b"" (which matches nothing), never `bytes(int)`,
    which allocates that many bytes."""
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else b""


_BUCKET_BITS = 16


def tile_slot(level: int, idx: int) -> tuple[int, int, int]:
    """(tile level, tile index, byte offset) of complete node (level >= 1, idx)."""
    tl = (level - 1) >> 3
    s = level - (tl << 3)  # 1..8 within the tile
    width = 1 << (8 - s)
    n = idx >> (8 - s)
    return tl, n, (TILE_WIDTH - (width << 1) + idx - n * width) * _HASH


def hkey(seq: int, payload_hash: str) -> int:
    """The bucketed lookup key of a payload row (see the module docstring)."""
    return ((seq >> _BUCKET_BITS) << 32) | int(payload_hash[:8], 16)


def layout_version(conn: sqlite3.Connection) -> int:
    """3 for this layout, 2 and 1 for the earlier ones, 0 for an empty file."""
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" in tables:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 2  # meta came with layout 2
    if "events" in tables or "payloads" in tables or "nodes" in tables:
        return 1
    return 0


class TileBuilder:
    """The right-edge tiles of a growing tree: fed the nodes `MerkleFrontier` creates.

    `add` places a node in its tile; `take_dirty` hands out the tiles to write (complete
    ones once, right-edge ones of level >= 1 each time they changed) and forgets complete
    ones. `copy` lets a batch be thrown away on rollback.
    """

    __slots__ = ("_edge", "_dirty", "_done")

    def __init__(self) -> None:
        self._edge: dict[int, tuple[int, bytearray]] = {}  # tile level -> (index, bytes)
        self._dirty: set[int] = set()
        self._done: list[tuple[int, int, bytes]] = []  # filled, not yet handed out

    def copy(self) -> TileBuilder:
        t = TileBuilder()
        t._edge = {k: (n, bytearray(b)) for k, (n, b) in self._edge.items()}
        t._dirty = set(self._dirty)
        t._done = list(self._done)
        return t

    def add_flat(self, nodes: Sequence[object]) -> None:
        """Nodes as a flat sequence level, idx, hash, level, idx, hash, ..."""
        edge, dirty, done = self._edge, self._dirty, self._done
        last_tl, cur_n, buf = -1, -1, bytearray()
        for j in range(0, len(nodes), 3):
            level, idx = nodes[j], nodes[j + 1]
            # tile_slot(level, idx), inlined: this runs once per node (writer, verify)
            tl = (level - 1) >> 3  # type: ignore[operator]
            shift = (tl << 3) + 8 - level  # type: ignore[operator]
            n = idx >> shift  # type: ignore[operator]
            if tl != last_tl or n != cur_n:
                cur = edge.get(tl)
                if cur is None or cur[0] != n:
                    if cur is not None:  # nodes of a later tile: the edge tile is complete
                        done.append((tl, cur[0], bytes(cur[1])))
                    cur = edge[tl] = (n, bytearray(TILE_BYTES))
                    dirty.add(tl)
                elif tl not in dirty:
                    dirty.add(tl)
                last_tl, cur_n, buf = tl, n, cur[1]
            off = (TILE_WIDTH - (2 << shift) + idx - (n << shift)) * _HASH  # type: ignore[operator]
            buf[off : off + _HASH] = nodes[j + 2]  # type: ignore[index]

    def take_dirty(self) -> list[tuple[int, int, bytes]]:
        out, self._done = self._done, []
        for tl in sorted(self._dirty):
            n, buf = self._edge[tl]
            if buf[-_HASH:] != _ZERO:  # the tile's root is set: the tile is complete
                out.append((tl, n, bytes(buf)))
                del self._edge[tl]
            elif tl > 0:
                out.append((tl, n, bytes(buf)))
        self._dirty.clear()
        return out

    @classmethod
    def load(cls, conn: sqlite3.Connection, size: int) -> TileBuilder:
        """The edge tiles of a stored tree of `size` leaves (layout 2)."""
        t = cls()
        base = size  # number of complete nodes at the base level of tile level tl
        tl = 0
        while base >= 2:
            n = base // TILE_WIDTH
            if base % TILE_WIDTH >= 2:  # the edge tile holds at least one node
                if tl == 0:
                    buf = bytearray(TILE_BYTES)
                    leaves = [_as_hash_bytes(h) for (h,) in conn.execute(
                        "SELECT leaf FROM events WHERE seq >= ? AND seq < ? ORDER BY seq",
                        (n * TILE_WIDTH, size))]  # fmt: skip
                    _fill_from_base(buf, leaves)
                else:
                    row = conn.execute(
                        "SELECT hashes FROM tiles WHERE level = ? AND idx = ?", (tl, n)
                    ).fetchone()
                    buf = bytearray(row[0]) if row else bytearray(TILE_BYTES)
                    if len(buf) != TILE_BYTES:
                        raise ValueError(f"stored tile ({tl}, {n}) has the wrong length")
                t._edge[tl] = (n, buf)
            base >>= 8
            tl += 1
        return t


def _fill_from_base(buf: bytearray, base: Sequence[bytes]) -> None:
    """Write every complete node above `base` (hashes at the tile's base level) into buf."""
    row = list(base)
    s = 1
    while len(row) >= 2 and s <= 8:
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        start = (TILE_WIDTH - (1 << (9 - s))) * _HASH
        buf[start : start + len(row) * _HASH] = b"".join(row)
        s += 1


def tiles_from_leaves(leaves: Iterable[bytes]) -> Iterable[tuple[int, int, bytes]]:
    """Every tile row (level, idx, hashes) of the tree of `leaves` (migration, tests)."""
    frontier, tiles, flat = MerkleFrontier(), TileBuilder(), []
    for leaf in leaves:
        frontier.append_flat(leaf, flat)
        if len(flat) > 30000:
            tiles.add_flat(flat)
            flat.clear()
            yield from tiles.take_dirty()
    tiles.add_flat(flat)
    yield from tiles.take_dirty()


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """What a reader needs to know of a store's layout (read once per store)."""

    version: int
    time_ordered: bool  # events.time never decreases with seq: time bounds -> seq bounds


def read_layout(conn: sqlite3.Connection) -> StoreLayout:
    version = layout_version(conn)
    ordered = False
    if version >= 3:
        row = conn.execute("SELECT value FROM meta WHERE key = 'time_ordered'").fetchone()
        ordered = row is not None and row[0] == "1"
    return StoreLayout(version, ordered)


def seq_at_time(conn: sqlite3.Connection, time: str) -> int:
    """A seq s that splits the log at `time`: events before s are earlier than `time`,
    events from s on are not (one past the last event if every event is earlier).

    Binary search by point reads, valid only where time never decreases with seq
    (`StoreLayout.time_ordered`); seq gaps (a damaged store) are stepped over."""
    (top,) = conn.execute("SELECT max(seq) FROM events").fetchone()
    if top is None:
        return 0
    lo, hi = 0, top + 1  # the answer lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            "SELECT seq, time FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
        ).fetchone()
        if row is None or row[1] >= time:
            hi = mid
        else:
            lo = row[0] + 1
    return lo


def prepare_writer(conn: sqlite3.Connection) -> None:
    """Create layout 3, or migrate layout 1 or 2 to it, in one transaction (writer on open)."""
    version = layout_version(conn)
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"audit store layout {version} is newer than this wardgate understands"
        )
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = layout_version(conn)  # another process may have migrated meanwhile
        if version == 2:
            _migrate_v2_payload_rows(conn)
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        if version == 1:
            _migrate_v1(conn)
        ordered = True
        if version in (1, 2):
            ordered = _migrate_v2_indexes(conn)
        conn.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("time_ordered", "1" if ordered else "0")],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _migrate_v1(conn: sqlite3.Connection) -> None:
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "payloads" in tables:
        conn.execute(
            "INSERT INTO payload_rows(seq, hash, data, purged)"
            " SELECT e.seq, e.payload_hash, p.data, p.purged"
            " FROM events e JOIN payloads p ON p.hash = e.payload_hash ORDER BY e.seq"
        )
        conn.execute("DROP TABLE payloads")
    # tiles are recomputed from the stored leaf hashes (verify checks those against the
    # bodies, and the tree against every signed checkpoint)
    cur = conn.execute("SELECT leaf FROM events ORDER BY seq")
    conn.executemany(
        "INSERT INTO tiles(level, idx, hashes) VALUES (?,?,?)",
        list(tiles_from_leaves(_as_hash_bytes(h) for (h,) in cur)),
    )
    if "nodes" in tables:
        conn.execute("DROP TABLE nodes")


def _migrate_v2_payload_rows(conn: sqlite3.Connection) -> None:
    """Layout 2 -> 3: payload rows lose the hash index and its key column."""
    conn.execute("DROP INDEX IF EXISTS payload_rows_hkey")
    cols = {r[1] for r in conn.execute("PRAGMA table_info(payload_rows)")}
    if "hkey" in cols:
        conn.execute("ALTER TABLE payload_rows DROP COLUMN hkey")


def _migrate_v2_indexes(conn: sqlite3.Connection) -> bool:
    """Layout 1/2 -> 3: drop the per-event session index, and the time index if the
    events' times are in seq order (returned); the partial session indexes are built by
    SCHEMA."""
    conn.execute("DROP INDEX IF EXISTS events_session")
    disorder = conn.execute(
        "SELECT 1 FROM events a JOIN events b ON b.seq = a.seq + 1 WHERE b.time < a.time LIMIT 1"
    ).fetchone()
    if disorder is None:
        conn.execute("DROP INDEX IF EXISTS events_time")
    return disorder is None


def payload_by_hash(
    conn: sqlite3.Connection, version: int, payload_hash: str
) -> tuple[bytes | None, str | None] | None:
    """(data, purged) of a payload by hash, preferring a copy whose data is present.

    Layout 3 has no index by hash: this scans `payload_rows` (use `payload_row` with the
    event's seq where the event is known)."""
    if version < 2:
        row = conn.execute(
            "SELECT data, purged FROM payloads WHERE hash = ?", (payload_hash,)
        ).fetchone()
        return None if row is None else (None if row[0] is None else bytes(row[0]), row[1])
    if version >= 3:
        row = conn.execute(
            "SELECT data, purged FROM payload_rows WHERE hash = ? AND data IS NOT NULL LIMIT 1",
            (payload_hash,),
        ).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT data, purged FROM payload_rows WHERE hash = ? LIMIT 1", (payload_hash,)
            ).fetchone()
        return None if row is None else (None if row[0] is None else bytes(row[0]), row[1])
    try:
        prefix = int(payload_hash[:8], 16)
    except ValueError:
        return None
    (top,) = conn.execute("SELECT max(seq) FROM payload_rows").fetchone()
    if top is None:
        return None
    keys = [(b << 32) | prefix for b in range((top >> _BUCKET_BITS) + 1)]
    found: tuple[bytes | None, str | None] | None = None
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        sql = (
            "SELECT data, purged FROM payload_rows WHERE hkey IN "
            f"({','.join('?' * len(chunk))}) AND hash = ? ORDER BY data IS NULL LIMIT 1"
        )
        row = conn.execute(sql, [*chunk, payload_hash]).fetchone()
        if row is not None:
            if row[0] is not None:
                return bytes(row[0]), row[1]
            found = (None, row[1])
    return found


def payload_row(
    conn: sqlite3.Connection, version: int, seq: int, payload_hash: str
) -> tuple[bytes | None, str | None] | None:
    """(data, purged) of the payload of event `seq` (whose body names `payload_hash`)."""
    if version < 2:
        return payload_by_hash(conn, version, payload_hash)
    row = conn.execute(
        "SELECT data, purged FROM payload_rows WHERE seq = ? AND hash = ?", (seq, payload_hash)
    ).fetchone()
    if row is None:
        return None
    return None if row[0] is None else bytes(row[0]), row[1]


class ConnNodeReader:
    """`NodeReader` over one SQLite connection, for either layout."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        version: int | None = None,
        edge_cache: dict[int, bytes] | None = None,
    ) -> None:
        self._conn = conn
        self._version = layout_version(conn) if version is None else version
        # level-0 edge tiles recomputed from leaves, by tile index: a node once complete
        # never changes, so a cached tile answers for every node it holds
        self._edge_cache = {} if edge_cache is None else edge_cache

    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        out: dict[NodeKey, bytes] = {}
        leaves = [idx for level, idx in keys if level == 0]
        inner = [k for k in keys if k[0] > 0]
        for i in range(0, len(leaves), 500):
            chunk = leaves[i : i + 500]
            sql = f"SELECT seq, leaf FROM events WHERE seq IN ({','.join('?' * len(chunk))})"
            for seq, h in self._conn.execute(sql, chunk):
                out[(0, seq)] = _as_hash_bytes(h)
        if self._version < 2:
            self._v1_nodes(inner, out)
        else:
            self._tile_nodes(inner, out)
        return out

    def _tile_nodes(self, inner: Sequence[NodeKey], out: dict[NodeKey, bytes]) -> None:
        slots: dict[tuple[int, int], list[tuple[NodeKey, int]]] = {}
        for key in inner:
            tl, n, off = tile_slot(*key)
            slots.setdefault((tl, n), []).append((key, off))
        by_level: dict[int, list[int]] = {}
        for tl, n in slots:
            by_level.setdefault(tl, []).append(n)
        got: dict[tuple[int, int], bytes] = {}
        for tl, ns in by_level.items():
            for i in range(0, len(ns), 500):
                chunk = ns[i : i + 500]
                sql = (
                    "SELECT idx, hashes FROM tiles WHERE level = ? "
                    f"AND idx IN ({','.join('?' * len(chunk))})"
                )
                for n, blob in self._conn.execute(sql, [tl, *chunk]):
                    got[(tl, n)] = _as_hash_bytes(blob)
        for (tl, n), wanted in slots.items():
            blob = got.get((tl, n))
            if blob is None and tl == 0:  # the right-edge tile: from the leaves
                blob = self._edge_cache.get(n)
                if blob is None or any(blob[off : off + _HASH] == _ZERO for _, off in wanted):
                    buf = bytearray(TILE_BYTES)
                    leaves = [_as_hash_bytes(h) for (h,) in self._conn.execute(
                        "SELECT leaf FROM events WHERE seq >= ? AND seq < ? ORDER BY seq",
                        (n * TILE_WIDTH, (n + 1) * TILE_WIDTH))]  # fmt: skip
                    _fill_from_base(buf, leaves)
                    blob = bytes(buf)
                    if len(self._edge_cache) >= 4:
                        self._edge_cache.clear()
                    self._edge_cache[n] = blob
            if blob is None or len(blob) != TILE_BYTES:
                continue
            for key, off in wanted:
                h = blob[off : off + _HASH]
                if h != _ZERO:
                    out[key] = h

    def _v1_nodes(self, inner: Sequence[NodeKey], out: dict[NodeKey, bytes]) -> None:
        # One `level = ? AND idx IN (...)` query per level: a primary-key range per value.
        # (A row-value `(level, idx) IN (VALUES ...)` made SQLite scan the whole table.)
        by_level: dict[int, list[int]] = {}
        for level, idx in inner:
            by_level.setdefault(level, []).append(idx)
        for level, idxs in by_level.items():
            for i in range(0, len(idxs), 500):
                chunk = idxs[i : i + 500]
                sql = (
                    "SELECT idx, hash FROM nodes WHERE level = ? "
                    f"AND idx IN ({','.join('?' * len(chunk))})"
                )
                for idx, h in self._conn.execute(sql, [level, *chunk]):
                    out[(level, idx)] = _as_hash_bytes(h)
