"""`wardgate evidence export | verify` through the CLI on a real store (config stubbed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.audit.test_evidence_fixtures import ORIGIN, build_store
from wardgate.cli import audit_commands, evidence_commands
from wardgate.cli.audit_commands import AuditSettings


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store, _ring = build_store(tmp_path)
    store.append_sync("command", identity="ci-deployer", verdict="allow")  # unsigned tail
    store.close()
    s = AuditSettings(f"sqlite:///{tmp_path}/audit.db", "full", ORIGIN, tmp_path / "cp.key",
                      tmp_path / "published.txt")  # fmt: skip
    monkeypatch.setattr(audit_commands, "_settings", lambda _config: s)
    app = typer.Typer()
    evidence_commands.register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_export_then_verify(cli, tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    r = cli("evidence", "export", "--config", "x.yaml", "--identity", "ci-deployer", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "29 events" in r.output  # the tail was signed first, so it is included
    assert "left out" not in r.output
    assert (tmp_path / "published.txt").read_text().count("\u2014 ") == 1

    r = cli("evidence", "verify", str(out))
    assert r.exit_code == 0, r.output
    assert "keys taken from the bundle; pass --key to pin them" in r.output
    assert "29/29 events valid" in r.output and r.output.rstrip().endswith("OK")

    r = cli("evidence", "verify", str(out), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True

    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    r = cli("evidence", "verify", str(bad))
    assert r.exit_code == 1 and "FAILED" in r.output


def test_pinned_key_and_bad_arguments(cli, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    assert (
        cli("evidence", "export", "-c", "x.yaml", "--verdict", "deny", "-o", str(out)).exit_code
        == 0
    )
    from wardgate.audit.keys import load_keyring

    pub = tmp_path / "k.pub"
    pub.write_text("\n".join(k.vkey() for k in load_keyring(tmp_path / "cp.key").public_keys()))
    r = cli("evidence", "verify", str(out), "--key", str(pub))
    assert r.exit_code == 0, r.output
    assert "keys taken from the bundle" not in r.output
    empty = tmp_path / "empty.pub"
    empty.write_text("nothing here\n")
    assert cli("evidence", "verify", str(out), "--key", str(empty)).exit_code == 2
    assert (
        cli("evidence", "export", "-c", "x.yaml", "--verdict", "maybe", "-o", str(out)).exit_code
        == 2
    )
    assert cli("evidence", "verify", str(tmp_path / "missing.zip")).exit_code == 2
