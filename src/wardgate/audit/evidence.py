"""Evidence bundles: export selected events with proofs, and verify a bundle offline.

Theory of operation. `export_bundle` reads a store (never writes it), picks the events the
filters select, and writes one deterministic zip (bundle_zip.py) holding:

    manifest.json             canonical JSON: format, origin, filters, counts, tree size,
                              checkpoint sizes, and the SHA-256 of every other member
    manifest.sig              C2SP signed note over the manifest's SHA-256, by the log key
    events.jsonl              the canonical body of each selected event (what was hashed)
    payloads.jsonl            {hash, status: present|purged|missing, data (base64)}
    checkpoints.json          the signed notes: the last one, plus the first checkpoint that
                              covered the selected events (thinned to MAX_ANCHORS)
    proofs/inclusion.json     hashes of the leaf ranges the RFC 9162 audit paths of every
                              selected event need, in the tree of the last checkpoint (each
                              shared node once, so proofs for nearby events cost little)
    proofs/consistency.json   a consistency proof between each pair of successive checkpoints
    keys.json                 the verifier keys (signed-note vkeys) with validity periods
    report.md, report.html    the readable report (report.py)

Every selected event must be covered by the last checkpoint; newer events are left out and
counted (`evidence export` signs a fresh checkpoint first, so normally none are).

`verify_bundle` needs nothing but the zip (and, to pin trust, the auditor's copy of the
public key): the zip must be exactly what the writer would lay out; each member must match
the manifest's SHA-256; the manifest's signature must verify; each checkpoint's signature
must verify with a key valid when it was signed; successive checkpoints must be consistent;
each event line must be a JSON object with the ten keys, match the recorded filters, and
its exact bytes must have an inclusion proof to the last checkpoint; each payload must match its hash; and the
report must equal the one regenerated from the verified data. Each failure is named.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wardgate.audit.bundle_zip import ZipFormatError, prepare, read_zip, write_zip
from wardgate.audit.canonical import EVENT_KEYS, canonical_json, leaf_hash, node_hash
from wardgate.audit.checkpoint import CheckpointError, parse_note, sign_note, verify_note
from wardgate.audit.keys import Keyring, KeyringError, PublicKey, key_id
from wardgate.audit.layout import layout_version, payload_row
from wardgate.audit.merkle import (
    ProofError,
    _hash_ranges,
    _inclusion_ranges,
    _largest_pow2_below,
    check_consistency,
    check_inclusion,
)
from wardgate.audit.report import build_report, render_html, render_markdown
from wardgate.audit.store import AuditStore

__all__ = [
    "BUNDLE_FORMAT",
    "FILTER_KEYS",
    "MAX_ANCHORS",
    "EvidenceError",
    "ExportResult",
    "BundleReport",
    "export_bundle",
    "verify_bundle",
    "load_pinned_keys",
    "parse_verifier_key",
    "proof_ranges",
    "manifest_note_body",
]

BUNDLE_FORMAT = "wardgate-evidence/1"
FILTER_KEYS = ("identity", "connection", "session", "verdict", "kind", "since", "until")
MAX_ANCHORS = 64
_MEMBERS = (
    "manifest.json", "manifest.sig", "events.jsonl", "payloads.jsonl", "checkpoints.json",
    "proofs/inclusion.json", "proofs/consistency.json", "keys.json", "report.md", "report.html",
)  # fmt: skip
_HASHED = _MEMBERS[2:]
_RANGE_BATCH = 20000
_EVENT_KEY_SET = frozenset(EVENT_KEYS)
_MAX_NAMED = 200


class EvidenceError(Exception):
    """Export impossible (no checkpoint, key unusable, store inconsistent)."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    events: int
    left_out_unsigned: int
    tree_size: int
    checkpoints: int
    bytes: int


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _b64d(s: Any) -> bytes | None:
    """Strict base64 decode; None if `s` is not a valid base64 string."""
    try:
        return base64.b64decode(s, validate=True) if isinstance(s, str) else None
    except ValueError:
        return None


def manifest_note_body(origin: str, manifest: bytes) -> str:
    """Body of the manifest's signed note (never parses as a checkpoint: no size line)."""
    return f"{BUNDLE_FORMAT} manifest\n{origin}\nsha256 {hashlib.sha256(manifest).hexdigest()}\n"


def _key_json(k: PublicKey) -> dict[str, Any]:
    return {"vkey": k.vkey(), "key_id": k.key_id.hex(), "name": k.name,
            "not_before": k.not_before or None, "not_after": k.not_after}  # fmt: skip


def _note_key_id(note: str) -> str:
    try:
        return ",".join(s.key_id.hex() for s in parse_note(note)[1])
    except CheckpointError:
        return "-"


def proof_ranges(seqs: Sequence[int], size: int) -> list[tuple[int, int]]:
    """Union of the RFC 9162 audit paths of leaves `seqs` (sorted, unique) in a tree of `size`.

    A path is the siblings along the leaf's descent from the root: found for all leaves in
    one descent of the subtrees that hold selected leaves, not one descent per leaf.
    """
    out: list[tuple[int, int]] = []

    def walk(lo: int, hi: int, a: int, b: int) -> None:
        if a == b or hi - lo == 1:
            return
        mid = lo + _largest_pow2_below(hi - lo)
        m = bisect.bisect_left(seqs, mid, a, b)
        if m < b:  # the left child is the sibling on the paths of the right's leaves
            out.append((lo, mid))
        if a < m:
            out.append((mid, hi))
        walk(lo, mid, a, m)
        walk(mid, hi, m, b)

    if seqs:
        walk(0, size, 0, len(seqs))
    return sorted(out)


def _all_proofs_hold(
    leaves: Sequence[tuple[int, bytes]], size: int, nodes: Mapping[tuple[int, int], bytes],
    root: bytes,
) -> bool:  # fmt: skip
    """Fast path: every leaf's path at once (a multiproof), and every stored node agrees.

    Subtrees holding selected leaves are hashed from those leaves and must equal the
    bundle's node; the others come from the bundle. True iff the root comes out right and
    nothing disagreed, which implies every per-leaf proof verifies.
    """
    seqs = [s for s, _ in leaves]

    def walk(lo: int, hi: int, a: int, b: int) -> bytes:
        if a == b:
            return nodes[(lo, hi)]
        if hi - lo == 1:
            return leaves[a][1]
        mid = lo + _largest_pow2_below(hi - lo)
        m = bisect.bisect_left(seqs, mid, a, b)
        left, right = walk(lo, mid, a, m), walk(mid, hi, m, b)
        if a < m < b and (nodes.get((lo, mid)) != left or nodes.get((mid, hi)) != right):
            raise ProofError("stored node disagrees")
        return node_hash(left, right)

    try:
        return bool(leaves) and walk(0, size, 0, len(leaves)) == root
    except (KeyError, ProofError):
        return False


def _anchor_sizes(sizes: Sequence[int], seqs: Sequence[int], last: int) -> list[int]:
    """First checkpoint covering each selected event, thinned evenly, plus the last."""
    firsts = sorted({sizes[bisect.bisect_right(sizes, s)] for s in seqs})
    if len(firsts) > MAX_ANCHORS - 1:
        step = len(firsts) / (MAX_ANCHORS - 1)
        firsts = [firsts[int(i * step)] for i in range(MAX_ANCHORS - 1)]
    return sorted(set(firsts) | {last})


def export_bundle(
    store: AuditStore,
    keyring: Keyring,
    origin: str,
    out: Path,
    filters: Mapping[str, str | None] | None = None,
    *,
    published: Path | None = None,
) -> ExportResult:
    """Write the evidence bundle of the events `filters` select; see the module docstring.

    The whole store is verified first (`verify_store`, against `published` too when
    given), and a store that fails is refused: a bundle proves each event it holds, but
    not that the filters found every matching one, and the filters read columns an
    insider can edit (or rows one can delete) without touching what the proofs cover."""
    filters = {k: (filters or {}).get(k) for k in FILTER_KEYS}
    _refuse_unverified(store, keyring, published)
    conn = store._reader()
    version = layout_version(conn)
    cps = conn.execute("SELECT size, note, created FROM checkpoints ORDER BY size").fetchall()
    if not cps:
        raise EvidenceError("no signed checkpoint yet: nothing can be proven (run the gateway "
                            "or `evidence export` with the key file to sign one)")  # fmt: skip
    keys = keyring.public_keys()
    by_size = {int(s): (note, created) for s, note, created in cps}
    tree_size = int(cps[-1][0])
    try:
        last = verify_note(by_size[tree_size][0], keys)
    except CheckpointError as exc:
        raise EvidenceError(f"last checkpoint (size {tree_size}): {exc}") from exc
    if last.origin != origin:
        raise EvidenceError(f"last checkpoint is for origin {last.origin!r}, not {origin!r}")

    bodies: list[bytes] = []
    decoded: list[dict[str, Any]] = []
    left_out = 0
    for rec in store.events(**filters):
        if rec.seq >= tree_size:
            left_out += 1
            continue
        bodies.append(rec.body)
        decoded.append(rec.fields())
    seqs = [e["seq"] for e in decoded]

    # payloads
    cutoff = ""
    for (meta,) in conn.execute("SELECT meta FROM events WHERE kind = 'retention_purge'"):
        cutoff = max(cutoff, str(json.loads(meta).get("cutoff") or ""))
    pay_data: dict[str, bytes | None] = {}
    pay_entries: dict[str, dict[str, Any]] = {}  # by hash, in order of first use
    for e in decoded:
        ph = e["payload_hash"]
        if ph is None or pay_data.get(ph) is not None:
            continue
        # layout 2 keeps a copy per event: a copy purged with an old event may still be
        # present with a newer one
        row = payload_row(conn, version, e["seq"], ph)
        data = None if row is None else row[0]
        pay_data[ph] = data
        if data is not None:
            entry = {"hash": ph, "status": "present", "data": _b64(data)}
        elif ph in pay_entries:
            continue
        elif (row is not None and row[1]) or (cutoff and e["time"] < cutoff):
            entry = {"hash": ph, "status": "purged", "data": None}
        else:
            entry = {"hash": ph, "status": "missing", "data": None}
        pay_entries[ph] = entry
    pay_lines = [canonical_json(entry) for entry in pay_entries.values()]

    # checkpoints and proofs
    sizes = [int(s) for s, _n, _c in cps]
    anchors = _anchor_sizes(sizes, seqs, tree_size)
    cp_list = []
    for s in anchors:
        note, created = by_size[s]
        cp = verify_note(note, keys)
        cp_list.append({"size": s, "root": _b64(cp.root), "created": created, "note": note,
                        "key_id": _note_key_id(note)})  # fmt: skip
    consistency = []
    for a, b in zip(anchors, anchors[1:], strict=False):
        proof = store.consistency_proof(a, b)
        consistency.append({"from": a, "to": b, "proof": [_b64(h) for h in proof]})
    ranges = proof_ranges(seqs, tree_size)
    nodes: list[list[Any]] = []
    for i in range(0, len(ranges), _RANGE_BATCH):
        chunk = ranges[i : i + _RANGE_BATCH]
        try:
            hashes = _hash_ranges(store, chunk)
        except ProofError as exc:
            raise EvidenceError(f"cannot build inclusion proofs: {exc}") from exc
        nodes += [[lo, hi, _b64(h)] for (lo, hi), h in zip(chunk, hashes, strict=True)]

    key_docs = [_key_json(k) for k in keys]
    manifest_doc: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "origin": origin, "filters": filters,
        "events": len(bodies), "left_out_unsigned": left_out, "tree_size": tree_size,
        "checkpoints": anchors,
    }  # fmt: skip
    blocks = build_report(manifest_doc, decoded, pay_data, cp_list, key_docs)
    members: dict[str, bytes] = {
        "events.jsonl": b"".join(b + b"\n" for b in bodies),
        "payloads.jsonl": b"".join(p + b"\n" for p in pay_lines),
        "checkpoints.json": canonical_json(cp_list),
        "proofs/inclusion.json": canonical_json({"tree_size": tree_size, "ranges": nodes}),
        "proofs/consistency.json": canonical_json(consistency),
        "keys.json": canonical_json(key_docs),
        "report.md": render_markdown(blocks).encode(),
        "report.html": render_html(blocks).encode(),
    }
    prepared = [prepare(n, members[n]) for n in _HASHED]
    manifest_doc["files"] = {
        m.name: {"sha256": hashlib.sha256(m.data).hexdigest(),
                 "stored_sha256": hashlib.sha256(m.stored).hexdigest()}
        for m in prepared
    }  # fmt: skip
    manifest = canonical_json(manifest_doc)
    sig = sign_note(manifest_note_body(origin, manifest), keyring).encode()
    raw = write_zip([prepare("manifest.json", manifest, deflate=False),
                     prepare("manifest.sig", sig, deflate=False), *prepared])  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(raw)
    tmp.replace(out)
    return ExportResult(out, len(bodies), left_out, tree_size, len(anchors), len(raw))


def _refuse_unverified(store: AuditStore, keyring: Keyring, published: Path | None) -> None:
    from wardgate.audit.verify import verify_store  # verify imports the store; keep it lazy

    rep = verify_store(store.path, keyring.public_keys(), published=published)
    if rep.ok:
        return
    first = "; ".join(rep.failures[:3]) + ("; ..." if len(rep.failures) > 3 else "")
    raise EvidenceError(
        f"the audit store does not verify ({len(rep.failures)} problems: {first}); a bundle "
        "from it could leave matching events out unseen. Run `wardgate verify` for the list"
    )


# -- verification ---------------------------------------------------------------------------


@dataclass(slots=True)
class BundleReport:
    events_total: int = 0
    events_valid: int = 0
    checkpoints_total: int = 0
    checkpoints_valid: int = 0
    payloads_present: int = 0
    payloads_purged: int = 0
    keys_from_bundle: bool = True
    origin: str = ""
    tree_size: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, msg: str) -> None:
        self.failures.append(msg)

    def lines(self) -> list[str]:
        out = []
        if self.keys_from_bundle:
            out.append("keys taken from the bundle; pass --key to pin them")
        out += [
            f"{self.events_valid}/{self.events_total} events valid",
            f"{self.checkpoints_valid}/{self.checkpoints_total} checkpoints valid",
            f"{self.payloads_present} payloads present, {self.payloads_purged} purged by "
            "retention (not tampering)",
        ]
        out += self.failures[:_MAX_NAMED]
        if len(self.failures) > _MAX_NAMED:
            out.append(f"... and {len(self.failures) - _MAX_NAMED} more failures")
        out.append("OK" if self.ok else f"FAILED: {len(self.failures)} problems")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "origin": self.origin, "tree_size": self.tree_size,
            "events": {"valid": self.events_valid, "total": self.events_total},
            "checkpoints": {"valid": self.checkpoints_valid, "total": self.checkpoints_total},
            "payloads": {"present": self.payloads_present, "purged": self.payloads_purged},
            "keys_from_bundle": self.keys_from_bundle, "failures": self.failures,
        }  # fmt: skip


def parse_verifier_key(text: str) -> PublicKey:
    """Parse `name+hexid+base64(0x01||pub)`; the key id must match the key.

    Splits at the first two `+` (a key name has none; base64 may): `keys.parse_vkey`
    splits from the right and so rejects about half of all keys.
    """
    if not isinstance(text, str):
        raise KeyringError("not a verifier key: not a string")
    try:
        name, hexid, b64 = text.strip().split("+", 2)
        raw = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise KeyringError(f"not a verifier key: {exc}") from exc
    if len(raw) != 33 or raw[:1] != b"\x01":
        raise KeyringError("verifier key is not an Ed25519 key")
    if key_id(name, raw[1:]).hex() != hexid.lower():
        raise KeyringError("verifier key id does not match its key")
    return PublicKey(name, raw[1:], not_before="")


def load_pinned_keys(paths: Iterable[Path]) -> list[PublicKey]:
    """Verifier keys from files: any `name+hexid+base64` token on any line counts.

    Accepts a bare vkey file, or what `wardgate keys init|rotate` print.
    """
    keys: list[PublicKey] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        for token in text.split():
            if token.count("+") >= 2:
                try:
                    keys.append(parse_verifier_key(token))
                except KeyringError:
                    continue
        if not keys:
            raise KeyringError(f"no verifier key found in {path}")
    return keys


def _canonical_doc(rep: BundleReport, name: str, raw: bytes) -> Any:
    try:
        doc = json.loads(raw)
    except ValueError:
        rep.fail(f"{name}: not valid JSON")
        return None
    if canonical_json(doc) != raw:
        rep.fail(f"{name}: not in canonical form")
        return None
    return doc


def _trusted_keys(
    rep: BundleReport, key_docs: Any, pinned: Sequence[PublicKey] | None
) -> list[PublicKey]:
    bundle: list[PublicKey] = []
    for d in key_docs if isinstance(key_docs, list) else []:
        try:
            k = parse_verifier_key(d["vkey"])
            bundle.append(
                PublicKey(k.name, k.public, d.get("not_before") or "", d.get("not_after"))
            )
        except (KeyringError, KeyError, TypeError):
            rep.fail(f"keys.json: bad verifier key {d!r:.80}")
    if pinned is None:
        return bundle
    rep.keys_from_bundle = False
    periods = {k.key_id: k for k in bundle}
    out = []
    for p in pinned:
        b = periods.get(p.key_id)
        out.append(b if b is not None and b.public == p.public else p)
    return out


def _check_manifest_sig(rep: BundleReport, origin: str, manifest: bytes, sig: bytes,
                        keys: Sequence[PublicKey]) -> None:  # fmt: skip
    try:
        body, sigs = parse_note(sig.decode("utf-8"))
    except (CheckpointError, UnicodeDecodeError) as exc:
        rep.fail(f"manifest.sig: {exc}")
        return
    if body != manifest_note_body(origin, manifest):
        rep.fail("manifest.sig: signs a different manifest.json (one of the two was altered)")
        return
    for s in sigs:
        for k in keys:
            if k.name == s.name and k.key_id == s.key_id and k.verify(body.encode(), s.signature):
                return
    rep.fail("manifest.sig: signature invalid" + (" (signer not among the pinned keys)"
                                                  if not rep.keys_from_bundle else ""))  # fmt: skip


def _matches(ev: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    for k in ("identity", "connection", "session", "verdict", "kind"):
        if filters.get(k) is not None and ev.get(k) != filters[k]:
            return False
    if not isinstance(ev.get("time"), str):
        return False
    if filters.get("since") is not None and not ev["time"] >= filters["since"]:
        return False
    return not (filters.get("until") is not None and not ev["time"] < filters["until"])


def _check_complete(
    rep: BundleReport, seqs: Sequence[int], filters: Mapping[str, Any], tree_size: int
) -> None:
    """What a bundle can prove about what it leaves out. A selection by a filter cannot
    be checked from the bundle: the auditor relies on the export having verified the
    store first (it does). A bundle exported without any filter holds every event below
    its last checkpoint, seq 0 to tree_size - 1: a hole is an event missing from the
    evidence, and is named. (A --since/--until selection is one run of seqs only in a
    store whose times are in seq order, which older stores need not be.)"""
    if any(v is not None for v in filters.values()):
        return
    present = sorted({s for s in seqs if 0 <= s < tree_size})
    bounds = [-1, *present, tree_size]  # the gaps between neighbours, ends included
    missing = [(a + 1, b - 1) for a, b in zip(bounds, bounds[1:], strict=False) if b > a + 1]
    for lo, hi in missing[:20]:
        what = f"event {lo}" if lo == hi else f"events {lo}-{hi}"
        rep.fail(f"events.jsonl: {what} missing (the bundle has no filter: it holds every event)")
    if len(missing) > 20:
        rep.fail("events.jsonl: ... more events missing")


def verify_bundle(path: Path | bytes, pinned: Sequence[PublicKey] | None = None) -> BundleReport:
    """Check everything in a bundle with nothing but the bundle (and pinned keys, if given).

    A bundle is untrusted input: whatever shape its members have, the answer is a report
    with failures named, never an exception (OSError reading `path` aside)."""
    rep = BundleReport(keys_from_bundle=pinned is None)
    raw = path if isinstance(path, bytes) else Path(path).read_bytes()
    try:
        return _verify_bundle(rep, raw, pinned)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError,
            RecursionError, MemoryError) as exc:  # fmt: skip
        # a shape no check above foresaw: a failure, never a traceback or a pass
        rep.fail(f"bundle: malformed ({type(exc).__name__})")
        return rep


def _verify_bundle(
    rep: BundleReport, raw: bytes, pinned: Sequence[PublicKey] | None
) -> BundleReport:
    try:
        members = read_zip(raw)
    except ZipFormatError as exc:
        rep.fail(f"bundle: {exc}")
        return rep
    names = [m.name for m in members]
    if names != list(_MEMBERS):
        rep.fail(f"bundle: members {names} differ from the expected {list(_MEMBERS)}")
        return rep
    if any(m.data != m.stored for m in members[:2]):
        rep.fail("bundle: manifest members must be stored uncompressed")
    files = {m.name: m.data for m in members}
    stored = {m.name: m.stored for m in members}
    manifest = _canonical_doc(rep, "manifest.json", files["manifest.json"])
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        rep.fail("manifest.json: not a wardgate-evidence/1 manifest")
        return rep
    try:
        origin, tree_size = str(manifest["origin"]), int(manifest["tree_size"])
        filters, hashes = dict(manifest["filters"]), dict(manifest["files"])
        if any(v is not None and not isinstance(v, str) for v in filters.values()):
            raise TypeError("a filter is not a string")
        anchors = [int(s) for s in manifest["checkpoints"]]
        n_events = int(manifest["events"])
    except (KeyError, TypeError, ValueError) as exc:
        rep.fail(f"manifest.json: malformed ({exc})")
        return rep
    rep.origin, rep.tree_size = origin, tree_size
    for name in _HASHED:
        want = hashes.get(name)
        if not isinstance(want, dict):
            rep.fail(f"manifest.json: no hashes for {name}")
        elif want.get("sha256") != hashlib.sha256(files[name]).hexdigest():
            rep.fail(f"{name}: SHA-256 does not match the manifest")
        elif want.get("stored_sha256") != hashlib.sha256(stored[name]).hexdigest():
            rep.fail(f"{name}: stored (compressed) bytes do not match the manifest")
    if set(hashes) != set(_HASHED):
        rep.fail("manifest.json: file list differs from the bundle's members")
    keys = _trusted_keys(rep, _canonical_doc(rep, "keys.json", files["keys.json"]), pinned)
    _check_manifest_sig(rep, origin, files["manifest.json"], files["manifest.sig"], keys)

    # checkpoints
    roots: dict[int, bytes] = {}
    cps = _canonical_doc(rep, "checkpoints.json", files["checkpoints.json"]) or []
    if not isinstance(cps, list):
        rep.fail("checkpoints.json: not a list")
        cps = []
    rep.checkpoints_total = len(cps)
    if [c.get("size") for c in cps if isinstance(c, dict)] != anchors:
        rep.fail("checkpoints.json: sizes differ from the manifest")
    for c in cps:
        label = f"checkpoint at size {c.get('size')}" if isinstance(c, dict) else "checkpoint"
        try:
            cp = verify_note(str(c["note"]), keys, at=str(c["created"]))
            if cp.origin != origin or cp.size != c["size"] or _b64(cp.root) != c["root"]:
                raise CheckpointError("note does not match its size, root or origin")
        except (CheckpointError, KeyError, TypeError) as exc:
            rep.fail(f"{label}: {exc}")
            continue
        roots[cp.size] = cp.root
        rep.checkpoints_valid += 1
    cons = _canonical_doc(rep, "proofs/consistency.json", files["proofs/consistency.json"]) or []
    try:
        pairs = {(int(p["from"]), int(p["to"])): p["proof"] for p in cons}
    except (KeyError, TypeError, ValueError) as exc:
        rep.fail(f"proofs/consistency.json: malformed ({exc})")
        pairs = {}
    for a, b in zip(anchors, anchors[1:], strict=False):
        try:
            proof = [base64.b64decode(h, validate=True) for h in pairs[(a, b)]]
            check_consistency(a, b, proof, roots[a], roots[b])
        except KeyError:
            rep.fail(f"checkpoints at sizes {a} and {b}: consistency proof or checkpoint missing")
        except (ProofError, ValueError) as exc:
            rep.fail(f"checkpoints at sizes {a} and {b}: not consistent ({exc})")
    if not anchors or anchors[-1] != tree_size:
        rep.fail(f"manifest.json: last checkpoint is not at tree size {tree_size}")
    root = roots.get(tree_size)

    # payloads
    payloads: dict[str, bytes | None] = {}
    status: dict[str, str] = {}
    for i, line in enumerate(files["payloads.jsonl"].splitlines()):
        doc = _canonical_doc(rep, f"payloads.jsonl line {i + 1}", line)
        if not isinstance(doc, dict):
            continue
        ph, st = str(doc.get("hash")), str(doc.get("status"))
        status[ph] = st
        if st == "present":
            data = _b64d(doc.get("data"))
            if data is None or hashlib.sha256(data).hexdigest() != ph:
                rep.fail(f"payload {ph[:16]}: does not match its hash")
                continue
            payloads[ph] = data
            rep.payloads_present += 1
        else:
            payloads[ph] = None
            rep.payloads_purged += st == "purged"

    # proofs and events
    inc = _canonical_doc(rep, "proofs/inclusion.json", files["proofs/inclusion.json"]) or {}
    nodes: dict[tuple[int, int], bytes] = {}
    try:
        for lo, hi, h in inc.get("ranges", []) if isinstance(inc, dict) else []:
            node = _b64d(h)
            if node is None or not isinstance(lo, int) or not isinstance(hi, int):
                raise ValueError(f"bad range entry {[lo, hi, h]!r:.60}")
            nodes[(lo, hi)] = node
    except (TypeError, ValueError) as exc:
        rep.fail(f"proofs/inclusion.json: malformed ({exc})")
    events: list[dict[str, Any]] = []
    leaves: list[tuple[int, bytes]] = []
    checked: list[tuple[Any, list[str]]] = []
    prev = -1
    used: set[str] = set()
    for line in files["events.jsonl"].splitlines():
        rep.events_total += 1
        try:
            ev = json.loads(line)
            seq = ev["seq"]
        except (ValueError, KeyError, TypeError):
            rep.fail(f"events.jsonl line {rep.events_total}: not an event")
            continue
        problems = []
        # The line's exact bytes are what the inclusion proof covers (the store hashed
        # canonical JSON); re-encoding every line to compare would only double the cost.
        if not isinstance(ev, dict) or ev.keys() != _EVENT_KEY_SET:
            rep.fail(f"event {seq}: not an event body with the ten keys")
            continue
        if not isinstance(seq, int) or seq <= prev or seq >= tree_size:
            problems.append("out of order or beyond the last checkpoint")
        elif not _matches(ev, filters):
            problems.append("does not match the bundle's filters")
        ph = ev.get("payload_hash")
        if ph is not None and not isinstance(ph, str):
            problems.append("payload_hash is not a string")
        elif ph is not None:
            used.add(ph)
            st = status.get(ph)
            if st is None:
                problems.append("payload not in the bundle")
            elif st == "missing":
                problems.append("payload missing from the store (not purged by retention)")
            elif st not in ("present", "purged"):
                problems.append(f"payload status {st!r} unknown")
        if root is None:
            problems.append("no valid checkpoint to prove inclusion in")
        elif not problems:
            leaves.append((seq, leaf_hash(line)))
        checked.append((seq, problems))
        if isinstance(seq, int):
            prev = max(prev, seq)
        events.append(ev)
    if root is not None and leaves and not _all_proofs_hold(leaves, tree_size, nodes, root):
        bad = {}  # slow path, only on failure: check each event's own path to name it
        for seq, leaf in leaves:
            try:
                path = [nodes[r] for r in _inclusion_ranges(seq, tree_size)]
                check_inclusion(leaf, seq, tree_size, path, root)
            except KeyError:
                bad[seq] = "inclusion proof incomplete"
            except ProofError as exc:
                bad[seq] = f"inclusion proof does not verify ({exc})"
        if not bad:
            rep.fail("proofs/inclusion.json: nodes disagree with each other")
        for seq, problems in checked:
            if seq in bad:
                problems.append(bad[seq])
    for seq, problems in checked:
        if problems:
            rep.fail(f"event {seq}: {'; '.join(problems)}")
        else:
            rep.events_valid += 1
    if rep.events_total != n_events:
        rep.fail(f"events.jsonl: {rep.events_total} events, manifest says {n_events}")
    _check_complete(rep, [s for s, _ in checked if isinstance(s, int)], filters, tree_size)
    if set(status) - used:
        rep.fail(f"payloads.jsonl: {len(set(status) - used)} payloads no event refers to")

    # the readable report must say exactly what the verified data says
    if isinstance(cps, list) and all(isinstance(c, dict) for c in cps):
        try:
            key_docs = json.loads(files["keys.json"])
            blocks = build_report(manifest, events, payloads, cps, key_docs)
            # bundles of versions that wrote agents' control characters raw still verify
            # (the same evidence, rendered as they rendered it)
            if render_markdown(blocks).encode() != files["report.md"] and (
                render_markdown(blocks, legacy=True).encode() != files["report.md"]
            ):
                rep.fail("report.md: does not match the evidence in the bundle")
            if render_html(blocks).encode() != files["report.html"] and (
                render_html(blocks, legacy=True).encode() != files["report.html"]
            ):
                rep.fail("report.html: does not match the evidence in the bundle")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            rep.fail(f"report: cannot be regenerated ({exc})")
    return rep
