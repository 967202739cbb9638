"""`wardgate verify` on a store an insider edited by hand: a named failure, quickly.

Verify reads values the writer never stores: a seq moved to 10**12 (verify filled the
gap leaf by leaf: it never finished), a negative seq, a body or leaf that is an integer
(`bytes(10**12)` allocates a terabyte), a column or a checkpoint note stored as a BLOB,
a layout version that is not a number. Each must end in exit status 1 with the problem
named, never a traceback, a hang or an OK.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.audit.test_evidence_fixtures import ORIGIN, build_store
from wardgate.cli import audit_commands
from wardgate.cli.audit_commands import AuditSettings


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("golden")
    store, _ring = build_store(d)
    store.close()
    return d


CASES = {
    "seq far beyond the end": ("UPDATE events SET seq = 1000000000000 WHERE seq = 40",
                               "events 43-999999999999 missing"),
    "negative seq": ("UPDATE events SET seq = -7 WHERE seq = 3",
                     "event -7: seq out of order"),
    "body an integer": ("UPDATE events SET body = 1000000000000 WHERE seq = 5",
                        "event 5: body is not a blob"),
    "leaf an integer": ("UPDATE events SET leaf = 1000000000000 WHERE seq = 5",
                        "event 5: hash does not match"),
    "identity a blob": ("UPDATE events SET identity = x'00ff' WHERE seq = 5",
                        "event 5: fields do not match the hashed body"),
    "time a blob": ("UPDATE events SET time = x'00ff' WHERE seq = 5",
                    "event 5: fields do not match the hashed body"),
    "checkpoint note a blob": ("UPDATE checkpoints SET note = x'00ff' WHERE size = 5",
                               "note is not text"),
    "checkpoint root an integer": ("UPDATE checkpoints SET root = 1000000000000 WHERE size = 5",
                                   "row does not match its signed note"),
    "layout version not a number": ("UPDATE meta SET value = 'x' WHERE key = 'schema_version'",
                                    "store malformed (ValueError)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_hand_edited_store_fails_by_name(
    golden: Path, tmp_path: Path, case: str, monkeypatch
) -> None:
    sql, named = CASES[case]
    with sqlite3.connect(golden / "audit.db") as a, sqlite3.connect(tmp_path / "audit.db") as b:
        a.backup(b)
    with sqlite3.connect(tmp_path / "audit.db", isolation_level=None) as db:
        db.execute(sql)
    s = AuditSettings(f"sqlite:///{tmp_path}/audit.db", "full", ORIGIN, golden / "cp.key", None)
    monkeypatch.setattr(audit_commands, "_settings", lambda _config: s)
    app = typer.Typer()
    audit_commands.register(app)

    def hang(*_a: object) -> None:
        raise TimeoutError("wardgate verify did not finish in 20 s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    try:
        r = CliRunner().invoke(app, ["verify", "-c", "x.yaml"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert isinstance(r.exception, SystemExit), (case, repr(r.exception))
    assert r.exit_code == 1, (case, r.output)
    assert named in r.output, (case, r.output)
