"""`wardgate verify / keys / events / retention` on a real store (config reading stubbed)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from wardgate.audit.checkpoint import Checkpointer
from wardgate.audit.keys import load_keyring
from wardgate.audit.store import AuditStore
from wardgate.cli import audit_commands
from wardgate.cli.audit_commands import AuditSettings, register


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    s = AuditSettings(f"sqlite:///{tmp_path}/audit.db", "full", "wardgate.test/log",
                      tmp_path / "cp.key", tmp_path / "published.txt")  # fmt: skip
    monkeypatch.setattr(audit_commands, "_settings", lambda _config: s)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    return (lambda *args: runner.invoke(app, [*args, "--config", "x.yaml"])), s


def test_keys_events_verify_retention(cli) -> None:
    run, s = cli
    r = run("keys", "init")
    assert r.exit_code == 0 and "verifier key wardgate.test/log+" in r.output
    assert run("keys", "init").exit_code == 2
    store = AuditStore.open(s.store)
    cp = Checkpointer(store, load_keyring(s.key_file), s.origin, publish=s.publish)
    for i in range(4):
        store.append_sync("command", identity="ci" if i % 2 else "bot", verdict="deny" if i == 3 else "allow",
                          payload=b"SELECT %d" % i)  # fmt: skip
    cp.checkpoint_now()
    assert run("keys", "rotate").exit_code == 0
    cp.keyring = load_keyring(s.key_file)
    store.append_sync("command", identity="ci")
    cp.close()
    store.close()

    r = run("events", "--identity", "ci", "--json")
    assert r.exit_code == 0
    assert [json.loads(line)["seq"] for line in r.output.splitlines()] == [1, 3, 4]
    r = run("events", "--verdict", "deny")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 1

    r = run("verify")
    assert r.exit_code == 0, r.output
    assert "5/5 events valid" in r.output and "2/2 checkpoints valid" in r.output
    assert "2/2 published checkpoints agree" in r.output

    r = run("retention", "apply", "--older-than", "0s")
    assert r.exit_code == 0 and "purged 4 payloads" in r.output
    r = run("verify")
    assert r.exit_code == 0, r.output
    assert "4 payloads purged by retention" in r.output

    with sqlite3.connect(Path(s.store.removeprefix("sqlite://"))) as conn:
        conn.execute("UPDATE events SET verdict = 'allow' WHERE seq = 3")
    r = run("verify", "--json")
    assert r.exit_code == 1
    assert json.loads(r.output)["failures"] == ["event 3: fields do not match the hashed body"]
    assert run("retention", "apply", "--older-than", "soon").exit_code == 2
