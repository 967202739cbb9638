"""A filtered evidence bundle cannot silently leave out events an insider hid.

A bundle proves that each event it holds is in the log; it cannot prove that the filter
found every matching event, so the export must not select from a store that fails
verification. An insider with write access to the store file hides an event from
`--identity` or a session from `--session` by editing the columns the filters read
(the hashed body stays, so `wardgate verify` names the event), or deletes an event
outright: `evidence export` must refuse (exit 1, naming the problem), never write a
bundle that verifies while missing the event.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.audit.test_evidence_fixtures import ORIGIN, build_store
from wardgate.cli import audit_commands, evidence_commands
from wardgate.cli.audit_commands import AuditSettings


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store, _ring = build_store(tmp_path)
    store.close()
    s = AuditSettings(f"sqlite:///{tmp_path}/audit.db", "full", ORIGIN, tmp_path / "cp.key", None)
    monkeypatch.setattr(audit_commands, "_settings", lambda _config: s)
    app = typer.Typer()
    evidence_commands.register(app)
    audit_commands.register(app)
    runner = CliRunner()
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    yield (lambda *args: runner.invoke(app, list(args))), db, tmp_path
    db.close()


def _first(db: sqlite3.Connection, where: str) -> int:
    return db.execute(f"SELECT min(seq) FROM events WHERE {where}").fetchone()[0]


TAMPERS = {
    # the identity column of one of ci-deployer's commands; its hashed body still says
    # ci-deployer
    "identity column": (
        ["--identity", "ci-deployer"],
        "UPDATE events SET identity = 'assistant' WHERE seq = {seq}",
        "identity = 'ci-deployer' AND kind = 'command'",
    ),
    # a whole session moved out of `--session s2` (and its session_start out of the
    # session index)
    "session column": (
        ["--session", "s2"],
        "UPDATE events SET session = 'zz', kind = CASE kind WHEN 'session_start' THEN "
        "'command' ELSE kind END WHERE session = 's2' AND seq >= {seq}",
        "session = 's2'",
    ),
    # a denied statement deleted from the middle of the log
    "deleted event": (
        ["--verdict", "deny"],
        "DELETE FROM events WHERE seq = {seq}",
        "verdict = 'deny'",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERS))
@pytest.mark.parametrize("checkpoint", ["--checkpoint", "--no-checkpoint"])
def test_export_refuses_a_store_that_hides_events(world, name: str, checkpoint: str) -> None:
    cli, db, tmp = world
    filters, sql, where = TAMPERS[name]
    out = tmp / "clean.zip"
    r = cli("evidence", "export", "-c", "x.yaml", *filters, "-o", str(out), "--no-checkpoint")
    assert r.exit_code == 0, r.output
    honest = json.loads(cli("evidence", "verify", str(out), "--json").output)["events"]["total"]

    seq = _first(db, where)
    db.execute(sql.format(seq=seq))
    out = tmp / "tampered.zip"
    r = cli("evidence", "export", "-c", "x.yaml", *filters, "-o", str(out), checkpoint)
    if r.exit_code == 0:  # what it must never be: a valid bundle with fewer events
        rep = json.loads(cli("evidence", "verify", str(out), "--json").output)
        pytest.fail(f"exported {rep['events']['total']} of {honest} events, ok={rep['ok']}")
    assert r.exit_code == 1, r.output
    # (a fresh checkpoint is refused first when the tree itself no longer matches)
    assert "does not verify" in r.output or "differs from its checkpoint" in r.output, r.output
    assert not out.exists()
    # and `wardgate verify` names it
    v = cli("verify", "-c", "x.yaml")
    assert v.exit_code == 1 and f"event {seq}" in v.output, v.output


def test_an_unfiltered_bundle_missing_an_event_fails(tmp_path: Path, monkeypatch) -> None:
    """A bundle without filters holds every event below its checkpoint, so the verifier
    can see a hole: one written by an exporter that did not verify the store (an older
    wardgate), from a store with a row deleted inside a stored tile, verified as OK."""
    from wardgate.audit import evidence
    from wardgate.audit.checkpoint import Checkpointer
    from wardgate.audit.evidence import export_bundle, verify_bundle
    from wardgate.audit.keys import init_keyring
    from wardgate.audit.store import AuditStore

    store = AuditStore.open(tmp_path / "audit.db")
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    for i in range(600):  # two complete tiles: the deleted leaf stays in a stored tile
        store.append_sync("command", identity="ci", connection="prod", verdict="allow",
                          meta={"i": i})  # fmt: skip
    Checkpointer(store, ring, ORIGIN).checkpoint_now()
    with sqlite3.connect(tmp_path / "audit.db", isolation_level=None) as db:
        db.execute("DELETE FROM events WHERE seq IN (100, 101)")
    monkeypatch.setattr(evidence, "_refuse_unverified", lambda *a, **k: None)
    export_bundle(store, ring, ORIGIN, tmp_path / "all.zip", {})
    store.close()
    rep = verify_bundle(tmp_path / "all.zip")
    assert not rep.ok
    assert (
        "events.jsonl: events 100-101 missing (the bundle has no filter: it holds every event)"
        in (rep.failures)
    ), rep.failures
