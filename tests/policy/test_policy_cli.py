"""`wardgate policy check|test` against a real config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from wardgate.cli import policy_commands

CONFIG = """
store: sqlite:///{store}
identities:
  - name: ci-bot
    token: env:WG_POLICY_T1
    groups: [ci]
  - name: migrator
    token: env:WG_POLICY_T2
    groups: [dba]
connections:
  - name: prod
    listen: 127.0.0.1:6551
    target: {{host: 127.0.0.1, database: test, user: postgres}}
    policies: [prod]
  - name: lab
    listen: 127.0.0.1:6552
    target: {{host: 127.0.0.1, database: test, user: postgres}}
    on_unparsed: review
policies:
  - name: prod
    include: [baseline]
    rules:
      - name: review-pii
        verdict: review
        objects: {{columns: [customers.ssn]}}
        review: {{ttl: 5m, approvals: 2}}
      - name: mask-email
        verdict: mask
        mask: {{columns: [customers.email], strategy: partial}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "wardgate.yaml"
    path.write_text(CONFIG.format(store=tmp_path / "s.db"))
    return path


@pytest.fixture
def run():
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        pass

    policy_commands.register(root)
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(root, list(args), **kw)


def check(run, config, sql, *extra, identity="ci-bot", connection="prod", **kw):
    return run(
        "policy",
        "check",
        "--config",
        str(config),
        "--identity",
        identity,
        "--connection",
        connection,
        *extra,
        "--",
        sql,
        **kw,
    )


def test_check_exit_codes(run, config: Path) -> None:
    r = check(run, config, "SELECT name FROM customers")
    assert r.exit_code == 0, r.output
    assert "ALLOW" in r.output
    r = check(run, config, "SELECT ssn FROM customers")
    assert r.exit_code == 3 and "prod/review-pii" in r.output and "2 approval(s)" in r.output
    r = check(run, config, "SELECT 1; DROP TABLE customers")
    assert r.exit_code == 4 and "baseline/deny-drop-table" in r.output
    r = check(run, config, "SELEC 1", connection="lab")
    assert r.exit_code == 3 and "builtin/unparsed" in r.output


def test_check_json(run, config: Path) -> None:
    r = check(run, config, "SELECT email FROM customers", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["verdict"] == "allow"
    (stmt,) = doc["statements"]
    assert stmt["masks"][0]["rule"] == "prod/mask-email"
    assert "table:customers" in stmt["facts"]["objects"]


def test_check_stdin_and_unknown_names(run, config: Path) -> None:
    r = check(run, config, "-", input="TRUNCATE customers")
    assert r.exit_code == 4
    r = check(run, config, "SELECT 1", identity="nobody")
    assert r.exit_code == 2 and "unknown identity" in r.output
    r = check(run, config, "SELECT 1", connection="nowhere")
    assert r.exit_code == 2 and "unknown connection" in r.output


def test_bad_policy_reference_is_exit_2(run, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        CONFIG.format(store=tmp_path / "s.db").replace("policies: [prod]", "policies: [nope]")
    )
    r = check(run, path, "SELECT 1")
    assert r.exit_code == 2 and "nope" in r.output


def test_policy_test_table(run, config: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        """
defaults: {identity: ci-bot, connection: prod}
cases:
  - {sql: "SELECT 1", expect: allow}
  - {sql: "DROP TABLE t", expect: deny, rule: baseline/deny-drop-table}
  - {sql: "DELETE FROM t", expect: review}
  - {sql: "EXECUTE p", expect: review, setup: ["PREPARE p AS DELETE FROM t"]}
  - {sql: "SELEC", expect: review, connection: lab}
"""
    )
    r = run("policy", "test", "--config", str(config), str(cases))
    assert r.exit_code == 0, r.output
    assert "5 passed, 0 failed" in r.output
    cases.write_text(
        """
- {sql: "SELECT 1", expect: deny, identity: ci-bot, connection: prod}
- {sql: "DROP TABLE t", expect: deny, rule: baseline/other, identity: ci-bot, connection: prod}
- {sql: "SELECT 2", expect: allow, identity: ci-bot, connection: prod}
"""
    )
    r = run("policy", "test", "--config", str(config), str(cases))
    assert r.exit_code == 1
    assert "1 passed, 2 failed" in r.output
    assert "- expected deny" in r.output and "+ got      allow  prod/mask-email" in r.output


def test_corpus_through_policy_check(run, tmp_path: Path) -> None:
    """The bypass corpus through `policy check` with the built-in baseline."""
    from tests.corpus.load import load_cases

    path = tmp_path / "baseline.yaml"
    path.write_text(CONFIG.format(store=tmp_path / "s.db").replace("    policies: [prod]\n", ""))
    codes = {"allow": 0, "review": 3, "deny": 4}
    mismatches = []
    for case in load_cases():
        if case.setup:
            continue  # session state: covered by tests/policy/test_corpus.py
        r = check(run, path, case.sql, "--via", case.via)
        if r.exit_code != codes[case.expect]:
            mismatches.append((case.sql, case.expect, r.exit_code, r.output[-200:]))
    assert not mismatches, mismatches
