"""Verify a store from scratch: every event, payload, the tree, checkpoints, published notes.

Theory of operation: verify trusts nothing in the store except what it recomputes. One
pass over the events in seq order (joined with their payloads): each row's columns are
re-canonicalised and compared with the stored body (so a field edit shows), the body's
leaf hash with the stored leaf, the payload bytes with the payload hash (a missing payload
is "purged" only if a recorded retention_purge cutoff covers the event's time), and seq
must have no gaps (after a gap the tree is not rebuilt: every later checkpoint fails). The
leaves feed a `MerkleFrontier`, which yields the recomputed root at every size a
checkpoint or published note names. A value of a type the writer never stores (a body
that is an integer, a note that is a BLOB) fails its check, never raises. Each stored checkpoint must carry a valid
signature by a key that was active when it was made, and match the recomputed root at its
size; successive checkpoints must be consistent (a proof from the stored nodes is
checked). Every published note must verify and agree with the log and the stored
checkpoint of its size: a log rolled back or rewritten behind a published checkpoint
fails here even if the store itself was made self-consistent. Output reads like
`aws cloudtrail validate-logs`: counts plus one line per named failure.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from wardgate.audit.canonical import event_body, leaf_hash
from wardgate.audit.checkpoint import CheckpointError, read_published, verify_note
from wardgate.audit.group_commit import _j  # the writer's own scalar encoder
from wardgate.audit.keys import PublicKey
from wardgate.audit.layout import TileBuilder, layout_version
from wardgate.audit.merkle import MerkleFrontier, ProofError, check_consistency, consistency_proof
from wardgate.audit.store import _ConnNodeReader

__all__ = ["VerifyReport", "verify_store"]

_MAX_NAMED = 200  # failures listed one by one before summarising


@dataclass(slots=True)
class VerifyReport:
    events_total: int = 0
    events_valid: int = 0
    checkpoints_total: int = 0
    checkpoints_valid: int = 0
    published_total: int = 0
    published_valid: int = 0
    payloads_purged: int = 0
    unsigned_tail: int = 0  # events after the last checkpoint (not yet signed)
    failures: list[str] = field(default_factory=list)
    published_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, msg: str) -> None:
        self.failures.append(msg)

    def lines(self) -> list[str]:
        out = [
            f"{self.events_valid}/{self.events_total} events valid",
            f"{self.checkpoints_valid}/{self.checkpoints_total} checkpoints valid",
        ]
        if self.published_checked:
            out.append(f"{self.published_valid}/{self.published_total} published checkpoints agree")
        if self.payloads_purged:
            out.append(f"{self.payloads_purged} payloads purged by retention (not tampering)")
        if self.unsigned_tail:
            out.append(f"{self.unsigned_tail} events after the last checkpoint (not yet signed)")
        shown = self.failures[:_MAX_NAMED]
        out += shown
        if len(self.failures) > len(shown):
            out.append(f"... and {len(self.failures) - len(shown)} more failures")
        out.append("OK" if self.ok else f"FAILED: {len(self.failures)} problems")
        return out

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "events": {"valid": self.events_valid, "total": self.events_total},
            "checkpoints": {"valid": self.checkpoints_valid, "total": self.checkpoints_total},
            "published": {"valid": self.published_valid, "total": self.published_total}
            if self.published_checked
            else None,
            "payloads_purged": self.payloads_purged,
            "unsigned_tail": self.unsigned_tail,
            "failures": self.failures,
        }


class _TileCheck:
    """Layouts 2 and 3: every stored tile must equal the one rebuilt from the verified leaves."""

    def __init__(self, conn: sqlite3.Connection, rep: VerifyReport) -> None:
        self._conn, self._rep = conn, rep
        self._builder = TileBuilder()
        self._edge: dict[tuple[int, int], bytes] = {}  # incomplete tiles, checked at the end
        self._seen: set[tuple[int, int]] = set()

    def feed(self, created: list) -> None:
        self._builder.add_flat(created)
        for tl, n, blob in self._builder.take_dirty():
            if blob[-32:] == bytes(32):  # the tile's root not yet set: incomplete
                self._edge[(tl, n)] = blob
            else:
                self._edge.pop((tl, n), None)
                self._check(tl, n, blob)

    def _check(self, tl: int, n: int, blob: bytes) -> None:
        self._seen.add((tl, n))
        row = self._conn.execute(
            "SELECT hashes FROM tiles WHERE level = ? AND idx = ?", (tl, n)
        ).fetchone()
        if row is None:
            self._rep.fail(f"stored tree tile ({tl}, {n}) missing")
        elif not isinstance(row[0], bytes) or row[0] != blob:
            self._rep.fail(f"stored tree tile ({tl}, {n}) does not match the events")

    def finish(self) -> None:
        for (tl, n), blob in sorted(self._edge.items()):
            if tl > 0:  # the right-edge tile of level 0 is never stored (layout.py)
                self._check(tl, n, blob)
        extra = [k for k in self._conn.execute("SELECT level, idx FROM tiles")
                 if tuple(k) not in self._seen]  # fmt: skip
        for tl, n in extra[:20]:
            self._rep.fail(f"stored tree tile ({tl}, {n}) is not part of the log")
        if len(extra) > 20:
            self._rep.fail(f"... {len(extra) - 20} more stored tree tiles not part of the log")


def _connect_ro(path: Path) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(str(Path(path).resolve())) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    conn.execute("PRAGMA query_only=ON")
    return conn


def _range(a: int, b: int) -> str:
    return f"event {a}" if a == b else f"events {a}-{b}"


def verify_store(
    path: Path, keys: list[PublicKey], *, published: Path | None = None
) -> VerifyReport:
    """Recompute and check everything in the store at `path`; see the module docstring."""
    rep = VerifyReport()
    conn = _connect_ro(path)
    try:
        _verify(conn, keys, published, rep)
    except sqlite3.Error as exc:
        rep.fail(f"store unreadable: {exc}")
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, ProofError) as exc:
        # a value of a shape no writer stores, that no check above foresaw: a failure,
        # never a traceback (the message could quote a value: only the type is shown)
        rep.fail(f"store malformed ({type(exc).__name__})")
    finally:
        conn.close()
    return rep


def _verify(
    conn: sqlite3.Connection, keys: list[PublicKey], published: Path | None, rep: VerifyReport
) -> None:
    checkpoints = conn.execute(
        "SELECT size, root, note, created FROM checkpoints ORDER BY size"
    ).fetchall()
    notes: list[str] = []
    if published is not None:
        rep.published_checked = True
        try:
            notes = read_published(published)
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8, a zip not a bundle
            rep.fail(f"published checkpoints unreadable: {type(exc).__name__}: {exc}"[:300])
    pub_parsed = []
    for i, note in enumerate(notes):
        try:
            pub_parsed.append((i, verify_note(note, keys)))
        except CheckpointError as exc:
            rep.fail(f"published checkpoint {i + 1}: {exc}")
            pub_parsed.append((i, None))
    wanted = {int(s) for s, *_ in checkpoints} | {cp.size for _, cp in pub_parsed if cp}
    cutoff = ""
    for (meta,) in conn.execute("SELECT meta FROM events WHERE kind = 'retention_purge'"):
        try:
            cutoff = max(cutoff, str(json.loads(meta).get("cutoff") or ""))
        except ValueError:
            pass  # the event itself fails its own check below

    version = layout_version(conn)
    roots: dict[int, bytes] = {}
    frontier = MerkleFrontier()
    expected = 0
    # after a gap (or a seq out of order) every later leaf index is off, so no later root
    # can match: the tree is no longer fed, every checkpoint past the gap fails its root
    # check, and a gap of any width costs nothing (filling it leaf by leaf did: a seq
    # edited to 10**12 kept verify busy for ever)
    broken = False
    # layout 1: payloads (keyed by hash, in random order to the events) are checked in one
    # pass in storage order and only the hashes that fail are kept, so the event pass needs
    # no payload data. Layouts 2, 3: payload rows are in seq order, joined and hashed in the
    # event pass itself.
    bad_payloads: set[str] = set()
    if version < 2:
        e_sql = (
            "SELECT e.seq, e.time, e.session, e.identity, e.connection, e.kind, e.verdict,"
            " e.rule, e.payload_hash, e.meta, e.body, e.leaf, p.data IS NOT NULL, p.purged,"
            " p.hash IS NOT NULL, p.hash"
            " FROM events e LEFT JOIN payloads p ON p.hash = e.payload_hash ORDER BY e.seq"
        )
        for p_hash, p_data in conn.execute(
            "SELECT hash, data FROM payloads WHERE data IS NOT NULL"
        ):
            raw = p_data if isinstance(p_data, bytes) else str(p_data).encode()
            if hashlib.sha256(raw).hexdigest() != p_hash:
                bad_payloads.add(p_hash)
    else:
        e_sql = (
            "SELECT e.seq, e.time, e.session, e.identity, e.connection, e.kind, e.verdict,"
            " e.rule, e.payload_hash, e.meta, e.body, e.leaf, p.data, p.purged,"
            " p.seq IS NOT NULL, p.hash"
            " FROM events e LEFT JOIN payload_rows p ON p.seq = e.seq ORDER BY e.seq"
        )
    sha256 = hashlib.sha256
    by_seq = version >= 2
    tiles = _TileCheck(conn, rep) if version >= 2 else None
    created: list = []
    cur = conn.execute(e_sql)
    # encoded forms of the values that repeat (identity, connection, kind, rule, session)
    jc: dict = {}

    def J(value: object) -> str:  # noqa: N802
        encoded = _j(value)
        if len(jc) > 100_000:
            jc.clear()
        jc[value] = encoded
        return encoded

    while rows := cur.fetchmany(5000):
        for (
            seq,
            time,
            sess,
            ident,
            conn_,
            kind,
            verdict,
            rule,
            ph,
            meta,
            body,
            leaf,
            data,
            purged,
            has_row,
            p_hash,
        ) in rows:  # noqa: E501
            if seq != expected:
                broken = True
                if not isinstance(seq, int) or seq < expected:  # e.g. a negative seq
                    rep.events_total += 1
                    rep.fail(f"event {seq!r}: seq out of order (not part of the log)")
                    continue
                rep.fail(f"{_range(expected, seq - 1)} missing")
                rep.events_total += seq - expected
                expected = seq
            rep.events_total += 1
            problems = []
            if not isinstance(body, bytes):  # the writer stores a BLOB; never bytes(int)
                problems.append("body is not a blob")
                body = str(body).encode()
            # the columns, spliced in canonical key order exactly as the writer builds the
            # body (meta is stored as its canonical JSON text), must give the hashed bytes;
            # only on a mismatch is the slower full re-canonicalisation run, to name it
            try:
                spliced = (
                    f'{{"connection":{jc.get(conn_) or J(conn_)},"identity":{jc.get(ident) or J(ident)},'
                    f'"kind":{jc.get(kind) or J(kind)},"meta":{meta},"payload_hash":{_j(ph)},'
                    f'"rule":{jc.get(rule) or J(rule)},"seq":{seq},"session":{jc.get(sess) or J(sess)},'
                    f'"time":{_j(time)},"verdict":{jc.get(verdict) or J(verdict)}}}'
                ).encode()
            except (TypeError, ValueError):  # a column of a type no writer stores (a BLOB)
                spliced = None
            if spliced != body:
                try:
                    meta_doc = json.loads(meta)
                except (ValueError, TypeError):
                    problems.append("meta is not valid JSON")
                else:
                    fields = {
                        "seq": seq, "time": time, "session": sess, "identity": ident,
                        "connection": conn_, "kind": kind, "verdict": verdict, "rule": rule,
                        "payload_hash": ph, "meta": meta_doc,
                    }  # fmt: skip
                    try:
                        same = event_body(fields) == body
                    except (TypeError, ValueError):
                        same = False
                    if not same:
                        problems.append("fields do not match the hashed body")
            lh = leaf_hash(body)
            if not isinstance(leaf, bytes) or leaf != lh:
                problems.append("hash does not match")
            if ph is not None:
                if by_seq and data is not None:  # layouts 2, 3: the payload bytes
                    raw = data if isinstance(data, bytes) else str(data).encode()
                    if p_hash != ph or sha256(raw).hexdigest() != ph:
                        problems.append("payload does not match its hash")
                elif not by_seq and data:  # layout 1: present (checked above)
                    if ph in bad_payloads:
                        problems.append("payload does not match its hash")
                elif cutoff and isinstance(time, str) and time < cutoff:
                    rep.payloads_purged += 1
                elif has_row and purged:
                    problems.append("payload purged outside recorded retention")
                else:
                    problems.append("payload missing")
            if problems:
                rep.fail(f"event {seq}: {'; '.join(problems)}")
            else:
                rep.events_valid += 1
            expected = seq + 1
            if broken:
                continue
            frontier.append_flat(lh, created)
            if frontier.size in wanted:
                roots[frontier.size] = frontier.root()
        if tiles is not None:
            tiles.feed(created)
        created.clear()

    size = expected  # the log's extent (one past its last seq), gaps included
    reader = _ConnNodeReader(conn)
    if not broken:  # after a gap the tree cannot be rebuilt: the gap is the failure named
        if tiles is not None:
            tiles.finish()
        try:
            if size and MerkleFrontier.load(reader, size).root() != frontier.root():
                rep.fail("stored tree nodes do not match the events")
        except ProofError:
            rep.fail("stored tree nodes missing")

    prev: tuple[int, bytes] | None = None
    rep.checkpoints_total = len(checkpoints)
    stored_by_size: dict[int, bytes] = {}
    for csize, croot, note, created in checkpoints:
        label = f"checkpoint at size {csize}"
        try:
            # a signed note is text, its signing time a string: any other type was put
            # there by hand and verifies as nothing
            if not isinstance(note, str):
                raise CheckpointError("note is not text")
            cp = verify_note(note, keys, at=created if isinstance(created, str) else "")
        except CheckpointError as exc:
            rep.fail(f"{label}: {exc}")
            continue
        if cp.size != csize or not isinstance(croot, bytes) or cp.root != croot:
            rep.fail(f"{label}: row does not match its signed note")
            continue
        stored_by_size[csize] = cp.root
        if csize > size:
            rep.fail(f"{label}: log has only {size} events (truncated or rolled back)")
            continue
        if roots.get(csize) != cp.root:
            rep.fail(f"{label}: root does not match the log")
            continue
        if prev is not None:
            try:
                proof = consistency_proof(reader, prev[0], csize)
                check_consistency(prev[0], csize, proof, prev[1], cp.root)
            except ProofError as exc:
                rep.fail(f"checkpoints at sizes {prev[0]} and {csize}: not consistent ({exc})")
                continue
        prev = (csize, cp.root)
        rep.checkpoints_valid += 1
    if checkpoints:
        rep.unsigned_tail = max(0, size - max(int(c[0]) for c in checkpoints))
    else:
        rep.unsigned_tail = size

    rep.published_total = len(pub_parsed)
    for i, cp in pub_parsed:
        if cp is None:
            continue
        label = f"published checkpoint {i + 1} (size {cp.size})"
        if cp.size > size:
            rep.fail(f"{label}: log has only {size} events (truncated or rolled back)")
        elif roots.get(cp.size) != cp.root:
            rep.fail(f"{label}: root does not match the log")
        elif cp.size in stored_by_size and stored_by_size[cp.size] != cp.root:
            rep.fail(f"{label}: differs from the stored checkpoint")
        else:
            rep.published_valid += 1
