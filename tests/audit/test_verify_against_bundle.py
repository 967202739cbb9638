"""An insider who holds the key truncates the log and re-signs: caught by an old bundle.

With the key file, whoever can write the store can delete the newest events and the
checkpoints that covered them and sign a fresh checkpoint over what is left: the store
is self-consistent again and `wardgate verify` alone passes (a design limit: the key
signs whatever its holder wants). What catches it is a checkpoint kept out of their
reach: the published file, or an evidence bundle an auditor received earlier.
`wardgate verify --published` takes either, and a file that is neither fails cleanly.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.audit.test_evidence_fixtures import ORIGIN, build_store
from wardgate.audit.checkpoint import Checkpointer
from wardgate.audit.keys import load_keyring
from wardgate.audit.store import AuditStore
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
    return (lambda *args: runner.invoke(app, list(args))), tmp_path


def _truncate_and_resign(tmp: Path, keep: int) -> None:
    with sqlite3.connect(tmp / "audit.db", isolation_level=None) as db:
        db.execute("DELETE FROM events WHERE seq >= ?", (keep,))
        db.execute("DELETE FROM payload_rows WHERE seq >= ?", (keep,))
        db.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
    store = AuditStore.open(f"sqlite:///{tmp}/audit.db")
    Checkpointer(store, load_keyring(tmp / "cp.key"), ORIGIN).checkpoint_now()
    store.close()


def test_truncation_resigned_is_caught_by_an_older_bundle(world) -> None:
    cli, tmp = world
    old = tmp / "q3.zip"
    r = cli("evidence", "export", "-c", "x.yaml", "--identity", "assistant", "-o", str(old))
    assert r.exit_code == 0, r.output
    size = int(cli("verify", "-c", "x.yaml", "--json").output.split('"total": ')[1].split()[0])

    _truncate_and_resign(tmp, size - 6)
    r = cli("verify", "-c", "x.yaml")
    assert r.exit_code == 0, r.output  # the limit: self-consistent, signed with the key

    r = cli("verify", "-c", "x.yaml", "--published", str(old))
    assert r.exit_code == 1, r.output
    assert f"log has only {size - 6} events (truncated or rolled back)" in r.output, r.output
    assert "Traceback" not in r.output


def test_published_file_that_is_not_notes_fails_cleanly(world) -> None:
    cli, tmp = world
    for name, data in {
        "binary.txt": bytes(range(256)) * 4,
        "broken.zip": b"PK\x03\x04" + b"\x00" * 100,
        "empty.zip": b"",
    }.items():
        (tmp / name).write_bytes(data)
        r = cli("verify", "-c", "x.yaml", "--published", str(tmp / name))
        assert r.exception is None or isinstance(r.exception, SystemExit), (name, r.exception)
        assert r.exit_code == 1 or (name == "empty.zip" and r.exit_code == 0), (name, r.output)
