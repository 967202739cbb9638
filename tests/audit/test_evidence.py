"""Evidence bundles: export from a real store, verify offline, every kind of tampering fails."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from tests.audit.test_evidence_fixtures import ORIGIN, build_store
from wardgate.audit.bundle_zip import prepare, read_zip, write_zip
from wardgate.audit.canonical import leaf_hash
from wardgate.audit.evidence import (
    EvidenceError,
    _all_proofs_hold,
    export_bundle,
    load_pinned_keys,
    parse_verifier_key,
    verify_bundle,
)
from wardgate.audit.keys import init_keyring
from wardgate.audit.merkle import _inclusion_ranges, check_consistency, check_inclusion
from wardgate.audit.retention import apply_retention
from wardgate.audit.store import AuditStore


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("evidence")
    store, ring = build_store(tmp)
    bundle = tmp / "ci.zip"
    export_bundle(store, ring, ORIGIN, bundle, {"identity": "ci-deployer"})
    yield tmp, store, ring, bundle
    store.close()


def _members(path: Path) -> dict[str, bytes]:
    return {m.name: m.data for m in read_zip(path.read_bytes())}


def _rezip(members: dict[str, bytes]) -> bytes:
    """Re-lay the archive around edited members (CRCs and sizes correct, so only the
    bundle's own checks can catch the edit)."""
    return write_zip([prepare(n, d, deflate=n not in ("manifest.json", "manifest.sig"))
                      for n, d in members.items()])  # fmt: skip


def test_export_verifies_and_is_a_plain_zip(world) -> None:
    _tmp, store, _ring, bundle = world
    rep = verify_bundle(bundle)
    assert rep.ok, rep.failures
    assert rep.events_total == rep.events_valid == 28
    assert rep.checkpoints_valid == rep.checkpoints_total == 5  # 4 anchors + the last
    assert rep.lines()[0] == "keys taken from the bundle; pass --key to pin them"
    with zipfile.ZipFile(bundle) as z:  # any zip tool can open it
        assert z.testzip() is None
        events = z.read("events.jsonl").splitlines()
    assert [json.loads(e)["seq"] for e in events] == [
        r.seq for r in store.events(identity="ci-deployer")
    ]
    assert all(json.loads(e)["identity"] == "ci-deployer" for e in events)


def test_proofs_verify_with_the_merkle_module(world) -> None:
    _tmp, store, _ring, bundle = world
    m = _members(bundle)
    manifest = json.loads(m["manifest.json"])
    size = manifest["tree_size"]
    cps = json.loads(m["checkpoints.json"])
    roots = {c["size"]: base64.b64decode(c["root"]) for c in cps}
    assert roots[size] == store.root(size)
    nodes = {(lo, hi): base64.b64decode(h) for lo, hi, h in
             json.loads(m["proofs/inclusion.json"])["ranges"]}  # fmt: skip
    leaves = []
    for line in m["events.jsonl"].splitlines():
        seq = json.loads(line)["seq"]
        path = [nodes[r] for r in _inclusion_ranges(seq, size)]
        assert path == store.inclusion_proof(seq, size)
        check_inclusion(leaf_hash(line), seq, size, path, roots[size])
        leaves.append((seq, leaf_hash(line)))
    assert _all_proofs_hold(leaves, size, nodes, roots[size])  # verify's fast path
    assert not _all_proofs_hold(leaves, size, nodes, store.root(size - 1))
    for p in json.loads(m["proofs/consistency.json"]):
        proof = [base64.b64decode(h) for h in p["proof"]]
        check_consistency(p["from"], p["to"], proof, roots[p["from"]], roots[p["to"]])


def test_report_sections(world) -> None:
    _tmp, _store, _ring, bundle = world
    m = _members(bundle)
    md, page = m["report.md"].decode(), m["report.html"].decode()
    for heading in ("Sessions by identity and connection", "Authentication failures",
                    "Denied statements", "Approvals", "Masking", "Integrity",
                    "SOC 2 criteria each section supports"):  # fmt: skip
        assert f"## {heading}" in md
        assert f"<h2>{heading}" in page
    for criterion in ("CC6.1", "CC6.6", "CC7.2", "CC8.1"):
        assert criterion in md and criterion in page
    assert "not a SOC 2 report" in md and "claims any certification" in md
    assert "| ci-deployer | prod | 1 | 6 | 4 | 1 | 1 |" in md
    assert "DROP TABLE users" in md and "no-ddl" in md
    assert "| alice | prod | ticket OPS-12 |" in md
    assert "| prod | email | EMAIL_ADDRESS | 4 |" in md
    assert "assistant" not in md  # filtered out
    assert "<td>DROP TABLE users</td>" in page


@pytest.mark.parametrize(
    ("filters", "want"),
    [
        ({"verdict": "deny"}, lambda r: r.verdict == "deny"),
        ({"connection": "analytics", "kind": "command"},
         lambda r: r.connection == "analytics" and r.kind == "command"),
        ({"session": "s1"}, lambda r: r.session == "s1"),
        ({"kind": "auth_failure"}, lambda r: r.kind == "auth_failure"),
    ],
)  # fmt: skip
def test_filters_select_the_right_events(world, filters, want) -> None:
    tmp, store, ring, _bundle = world
    out = tmp / "f.zip"
    res = export_bundle(store, ring, ORIGIN, out, filters)
    expected = [r.seq for r in store.events() if want(r)]
    got = [json.loads(e)["seq"] for e in _members(out)["events.jsonl"].splitlines()]
    assert got == expected and res.events == len(expected) > 0
    assert verify_bundle(out).ok


def test_time_window(world) -> None:
    tmp, store, ring, _bundle = world
    times = [r.time for r in store.events()]
    since, until = times[10], times[30]
    out = tmp / "t.zip"
    export_bundle(store, ring, ORIGIN, out, {"since": since, "until": until})
    got = [json.loads(e)["time"] for e in _members(out)["events.jsonl"].splitlines()]
    assert got == [t for t in times if since <= t < until]
    assert verify_bundle(out).ok


@pytest.mark.parametrize(
    "name",
    ["manifest.json", "manifest.sig", "events.jsonl", "payloads.jsonl", "checkpoints.json",
     "proofs/inclusion.json", "proofs/consistency.json", "keys.json", "report.md",
     "report.html"],
)  # fmt: skip
def test_tampering_each_member_fails_naming_it(world, name: str) -> None:
    _tmp, _store, _ring, bundle = world
    members = _members(bundle)
    data = bytearray(members[name])
    data[len(data) // 2] ^= 0x01
    members[name] = bytes(data)
    rep = verify_bundle(_rezip(members))
    assert not rep.ok
    if name.startswith("manifest."):  # the two manifest files vouch for each other
        named = [f for f in rep.failures if f.startswith("manifest.")]
        assert any(name in f for f in named), rep.failures
    else:
        assert any(f.startswith(f"{name}: ") for f in rep.failures), rep.failures


def test_consistent_forgery_is_caught_by_the_manifest_signature(world) -> None:
    """An edit with every hash in the manifest updated still fails: the manifest is signed."""
    _tmp, _store, _ring, bundle = world
    members = _members(bundle)
    members["report.md"] = members["report.md"].replace(b"DROP TABLE", b"SELECT 1 --")
    manifest = json.loads(members["manifest.json"])
    manifest["files"]["report.md"]["sha256"] = hashlib.sha256(members["report.md"]).hexdigest()
    members["manifest.json"] = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    rep = verify_bundle(_rezip(members))
    assert (
        "manifest.sig: signs a different manifest.json (one of the two was altered)" in rep.failures
    )
    assert "report.md: does not match the evidence in the bundle" in rep.failures


def test_every_byte_of_the_zip_matters(world) -> None:
    _tmp, _store, _ring, bundle = world
    raw = bundle.read_bytes()
    assert len(raw) < 20000
    undetected = []
    for i in range(0, len(raw), 7):  # a stride keeps this under a few seconds
        b = bytearray(raw)
        b[i] ^= 0xFF
        if verify_bundle(bytes(b)).ok:
            undetected.append(i)
    assert undetected == []
    assert not verify_bundle(raw + b"\x00").ok
    assert not verify_bundle(raw[:-1]).ok


def test_pinned_keys(world, tmp_path: Path) -> None:
    _tmp, _store, ring, bundle = world
    pin = tmp_path / "trusted.pub"
    pin.write_text("\n".join(k.vkey() for k in ring.public_keys()) + "\n")
    rep = verify_bundle(bundle, load_pinned_keys([pin]))
    assert rep.ok, rep.failures
    assert "keys taken from the bundle" not in "\n".join(rep.lines())

    other = init_keyring(tmp_path / "other.key", ORIGIN)
    wrong = tmp_path / "wrong.pub"
    wrong.write_text(f"verifier key {other.active.vkey()}\n")  # as `keys init` prints it
    rep = verify_bundle(bundle, load_pinned_keys([wrong]))
    assert not rep.ok
    assert "manifest.sig: signature invalid (signer not among the pinned keys)" in rep.failures
    assert any(f.startswith("checkpoint at size") for f in rep.failures)


def test_vkey_with_plus_in_base64_parses(world) -> None:
    _tmp, _store, ring, _bundle = world
    for k in ring.public_keys():
        assert parse_verifier_key(k.vkey()).public == k.public


def test_purged_payloads_are_marked_not_tampering(tmp_path: Path) -> None:
    store, ring = build_store(tmp_path, rotate=False)
    try:
        apply_retention(store, "0s")
        from wardgate.audit.checkpoint import Checkpointer

        Checkpointer(store, ring, ORIGIN).checkpoint_now()
        out = tmp_path / "p.zip"
        export_bundle(store, ring, ORIGIN, out, {"verdict": "deny"})
        rep = verify_bundle(out)
        assert rep.ok, rep.failures
        assert rep.payloads_purged == 1 and rep.payloads_present == 0
        assert "(payload purged)" in _members(out)["report.md"].decode()
    finally:
        store.close()


def test_unsigned_tail_left_out_and_no_checkpoint_refused(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "k.key", ORIGIN)
    with AuditStore.open(tmp_path / "a.db") as store:
        store.append_sync("command", identity="x", verdict="allow")
        with pytest.raises(EvidenceError, match="no signed checkpoint"):
            export_bundle(store, ring, ORIGIN, tmp_path / "x.zip")
        from wardgate.audit.checkpoint import Checkpointer

        Checkpointer(store, ring, ORIGIN).checkpoint_now()
        store.append_sync("command", identity="x", verdict="allow")
        res = export_bundle(store, ring, ORIGIN, tmp_path / "x.zip")
        assert (res.events, res.left_out_unsigned, res.tree_size) == (1, 1, 1)
        assert verify_bundle(tmp_path / "x.zip").ok


def test_random_edits_inside_members_fail_cleanly(world) -> None:
    """Edits that keep the zip valid (CRCs recomputed) never crash verify, always fail it."""
    import random

    _tmp, _store, _ring, bundle = world
    rng = random.Random(5)
    original = _members(bundle)
    for name in original:
        for _ in range(15):
            members = dict(original)
            data = bytearray(members[name])
            pos = rng.randrange(len(data))
            data[pos] = rng.choice(b'{}[]",:0123456789abcdefAZ+/= \\n')
            if bytes(data) == original[name]:
                continue
            members[name] = bytes(data)
            rep = verify_bundle(_rezip(members))
            assert not rep.ok, (name, pos)


def test_proof_ranges_is_the_union_of_audit_paths() -> None:
    import random

    from wardgate.audit.evidence import proof_ranges

    rng = random.Random(7)
    for size in (1, 2, 3, 7, 8, 9, 100, 1000, 1025):
        for k in (1, 2, 5, 50):
            seqs = sorted(rng.sample(range(size), min(k, size)))
            want = sorted({r for s in seqs for r in _inclusion_ranges(s, size)})
            assert proof_ranges(seqs, size) == want, (size, seqs)


def test_an_edited_event_is_named_alone(world) -> None:
    _tmp, _store, _ring, bundle = world
    members = _members(bundle)
    lines = members["events.jsonl"].splitlines()
    victim = json.loads(lines[5])
    lines[5] = lines[5].replace(b'"time":"2', b'"time":"1')
    assert lines[5] != members["events.jsonl"].splitlines()[5]
    members["events.jsonl"] = b"".join(line + b"\n" for line in lines)
    rep = verify_bundle(_rezip(members))
    proof_failures = [f for f in rep.failures if "inclusion proof" in f]
    assert proof_failures == [
        f"event {victim['seq']}: inclusion proof does not verify (root does not match)"
    ]
    assert "events.jsonl: SHA-256 does not match the manifest" in rep.failures
