"""`wardgate evidence verify` on hostile bundles: a named failure, never a traceback or a pass.

The bundle is the one input an auditor takes from someone else. Each case below is laid
out as a well-formed zip (so it passes the layout check and reaches the JSON checks), with
members of the wrong shape: a checkpoints list that is a number, a key that is not a
string, a payload hash that is a list, filters that are not strings, JSON nested past
the parser's recursion limit; and archives that are truncated or name members outside
the bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.audit.test_evidence_fixtures import ORIGIN, build_store
from wardgate.audit.bundle_zip import prepare, read_zip, write_zip
from wardgate.audit.canonical import canonical_json
from wardgate.audit.evidence import _MEMBERS, export_bundle
from wardgate.cli import evidence_commands


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("bundle")
    store, ring = build_store(tmp)
    export_bundle(store, ring, ORIGIN, tmp / "b.zip", {"identity": "assistant"})
    store.close()
    return {m.name: m.data for m in read_zip((tmp / "b.zip").read_bytes())}


def _zip(files: dict[str, bytes], names: tuple[str, ...] = _MEMBERS) -> bytes:
    plain = ("manifest.json", "manifest.sig")
    return write_zip([prepare(n, files.get(n, b""), deflate=n not in plain) for n in names])


def _first_event_with(members: dict[str, bytes], **changes: object) -> bytes:
    lines = members["events.jsonl"].split(b"\n")
    ev = json.loads(lines[0])
    ev.update(changes)
    return b"\n".join([canonical_json(ev), *lines[1:]])


def _manifest_with(members: dict[str, bytes], **changes: object) -> bytes:
    doc = json.loads(members["manifest.json"])
    doc.update(changes)
    return canonical_json(doc)


CASES = {
    "checkpoints is a number": lambda m: {**m, "checkpoints.json": b"5"},
    "a key that is not a string": lambda m: {**m, "keys.json": b'[{"vkey":5}]'},
    "payload_hash is a list": lambda m: {
        **m,
        "events.jsonl": _first_event_with(m, payload_hash=[]),
    },
    "time is a number": lambda m: {**m, "events.jsonl": _first_event_with(m, time=5)},
    "filter until is a number": lambda m: {
        **m,
        "manifest.json": _manifest_with(
            m, filters={**json.loads(m["manifest.json"])["filters"], "until": 5}
        ),
    },
    "nested past the recursion limit": lambda m: {
        **m,
        "events.jsonl": b"[" * 100_000 + b"]" * 100_000 + b"\n" + m["events.jsonl"],
    },
}


def _verify(tmp_path: Path, raw: bytes, name: str = "bad.zip"):
    path = tmp_path / name
    path.write_bytes(raw)
    app = typer.Typer()
    evidence_commands.register(app)
    return CliRunner().invoke(app, ["evidence", "verify", str(path)])


@pytest.mark.parametrize("case", list(CASES))
def test_misshapen_member_is_a_named_failure(members, tmp_path: Path, case: str) -> None:
    r = _verify(tmp_path, _zip(CASES[case](members)))
    assert isinstance(r.exception, SystemExit), (case, repr(r.exception))
    assert r.exit_code == 1 and "FAILED" in r.output, (case, r.output)


def test_archives_that_are_not_bundles(members, tmp_path: Path) -> None:
    good = _zip(members)
    assert _verify(tmp_path, good).exit_code == 0
    evil = b"../../etc/cron.d/x"  # written under a same-length name, renamed in the bytes
    stand_in = "a" * (len(evil) - 1) + "x"
    traversal = _zip({**members, stand_in: b"* * * * * root sh"}, (stand_in, *_MEMBERS[1:]))
    traversal = traversal.replace(stand_in.encode(), evil)
    for raw in (
        good[: len(good) // 2],  # truncated
        good[:-1],
        b"",
        traversal,
        good + b"\x00" * 10,
    ):
        r = _verify(tmp_path, raw)
        assert isinstance(r.exception, SystemExit), repr(r.exception)
        assert r.exit_code == 1 and "FAILED" in r.output, r.output
    assert not Path("/etc/cron.d/x").exists()


def test_a_member_that_inflates_past_its_header_is_refused_unread(tmp_path: Path) -> None:
    """A deflate bomb whose header declares 10 bytes: refused after inflating 11 (it
    was inflated whole, 200 MB here, before its length was compared)."""
    import tracemalloc
    import zlib

    from wardgate.audit.bundle_zip import _DEFLATE, ZipFormatError, _layout

    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    comp = c.compress(b"\0" * (200 * 1024 * 1024)) + c.flush()
    raw = _layout([("events.jsonl", comp, _DEFLATE, zlib.crc32(b"x" * 10), 10)])
    tracemalloc.start()
    try:
        with pytest.raises(ZipFormatError, match="inflates beyond its recorded size"):
            read_zip(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, peak
    r = _verify(tmp_path, raw)
    assert r.exit_code == 1 and "inflates beyond" in r.output, r.output
