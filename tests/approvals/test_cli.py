"""`wardgate approvals list|approve|deny` against a real store file and config."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.approvals.helpers import make_command, make_decision, open_store
from wardgate.approvals.broker import ApprovalBroker
from wardgate.approvals.model import StaticReviewers
from wardgate.cli.approval_commands import register

CONFIG = """\
store: {store}
identities:
  - name: ci-bot
    token: env:WG_CLI_T1
    groups: [ci]
  - name: alice
    token: env:WG_CLI_T2
    roles: [reviewer]
  - name: dana
    token: env:WG_CLI_T3
    groups: [dba]
  - name: eve
    token: env:WG_CLI_T4
    roles: [reviewer]
    disabled: true
approvals:
  reviewer_groups: [dba]
connections:
  - name: prod
    listen: 127.0.0.1:6543
    target: {{host: 127.0.0.1, database: test, user: postgres}}
"""


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main() -> None:
        """wardgate"""

    register(root)
    return root


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "wardgate.yaml"
    path.write_text(CONFIG.format(store=tmp_path / "audit.db"))
    return path


async def hold(cfg: Path, *, required: int = 1) -> str:
    """A gateway run that holds one statement, then goes quiet (its store closed)."""
    store = open_store(cfg.parent / "audit.db")
    broker = ApprovalBroker(store, reviewers=StaticReviewers.of(()))
    a = await broker.request(make_command(), make_decision(required=required), fingerprint="fp")
    store.close()
    return a.id


def run(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def events(cfg: Path, kind: str) -> list[Any]:
    store = open_store(cfg.parent / "audit.db")
    try:
        return [e for e in store.events() if e.kind == kind]
    finally:
        store.close()


async def test_list_empty_and_json(app: typer.Typer, cfg: Path) -> None:
    r = run(app, "approvals", "list", "--config", str(cfg))
    assert r.exit_code == 0 and "no approval requests are pending" in r.output
    approval_id = await hold(cfg)
    r = run(app, "approvals", "list", "--json", "-c", str(cfg))
    assert r.exit_code == 0, r.output
    [item] = json.loads(r.stdout)
    assert item["id"] == approval_id and item["statement"] == "DELETE FROM orders"
    assert item["reason"] == "nightly cleanup" and item["application_name"] == "psql"
    r = run(app, "approvals", "list", "-c", str(cfg))
    [line] = r.stdout.splitlines()
    fields = line.split("\t")
    assert fields[:5] == [
        approval_id,
        "ci-bot",
        "prod",
        "baseline/review-delete-without-where",
        "0/1",
    ]
    assert fields[6:] == ["psql", "nightly cleanup", "DELETE FROM orders"]


async def test_approve_with_grant(app: typer.Typer, cfg: Path) -> None:
    approval_id = await hold(cfg)
    r = run(
        app, "approvals", "approve", approval_id, "--as", "alice",
        "--reason", "weekly purge", "--for", "7d", "-c", str(cfg),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"{approval_id} approved" in r.output and "granted: ci-bot on prod" in r.output
    [decided] = events(cfg, "approval_decided")
    assert decided.meta["reviewer"] == "alice" and decided.meta["reason"] == "weekly purge"
    [grant] = events(cfg, "approval_grant")
    assert grant.meta["seconds"] == 7 * 86400
    r = run(app, "approvals", "deny", approval_id, "--as", "dana", "--reason", "x", "-c", str(cfg))
    assert r.exit_code == 1 and "already approved" in r.output


async def test_deny_needs_reason_and_group_reviewer_may_deny(app: typer.Typer, cfg: Path) -> None:
    approval_id = await hold(cfg)
    r = run(app, "approvals", "deny", approval_id, "--as", "dana", "-c", str(cfg))
    assert r.exit_code == 2
    r = run(app, "approvals", "deny", approval_id, "--as", "dana", "--reason", " ", "-c", str(cfg))
    assert r.exit_code == 2
    r = run(
        app, "approvals", "deny", approval_id, "--as", "dana", "--reason", "use a WHERE",
        "-c", str(cfg),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"{approval_id} denied (denied by dana)" in r.output


@pytest.mark.parametrize(
    ("who", "message"),
    [("ci-bot", "not a reviewer"), ("eve", "not a reviewer"), ("nobody", "not a reviewer")],
)
async def test_refusals(app: typer.Typer, cfg: Path, who: str, message: str) -> None:
    approval_id = await hold(cfg)
    r = run(app, "approvals", "approve", approval_id, "--as", who, "-c", str(cfg))
    assert r.exit_code == 1 and message in r.output
    assert events(cfg, "approval_decided") == []


async def test_self_unknown_bad_duration_bad_config(
    app: typer.Typer, cfg: Path, tmp_path: Path
) -> None:
    text = cfg.read_text().replace("groups: [ci]", "roles: [agent, reviewer]")  # noqa: ASYNC240
    cfg.write_text(text)  # noqa: ASYNC240
    approval_id = await hold(cfg)
    r = run(app, "approvals", "approve", approval_id, "--as", "ci-bot", "-c", str(cfg))
    assert r.exit_code == 1 and "own request" in r.output
    r = run(app, "approvals", "approve", "ap-missing", "--as", "alice", "-c", str(cfg))
    assert r.exit_code == 1 and "no approval request" in r.output
    r = run(
        app, "approvals", "approve", approval_id, "--as", "alice", "--for", "soon", "-c", str(cfg)
    )
    assert r.exit_code == 2 and "invalid duration" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("connections: 5\n")
    r = run(app, "approvals", "list", "-c", str(bad))
    assert r.exit_code == 2 and "configuration error" in r.output


async def test_partial_approval_reports_progress(app: typer.Typer, cfg: Path) -> None:
    approval_id = await hold(cfg, required=2)
    r = run(app, "approvals", "approve", approval_id, "--as", "alice", "-c", str(cfg))
    assert r.exit_code == 0 and "1 of 2 approvals, still pending" in r.output
    r = run(app, "approvals", "approve", approval_id, "--as", "dana", "-c", str(cfg))
    assert r.exit_code == 0 and f"{approval_id} approved" in r.output


async def test_waiting_gateway_runs_after_cli_approval(app: typer.Typer, cfg: Path) -> None:
    store = open_store(cfg.parent / "audit.db")
    broker = ApprovalBroker(store, reviewers=StaticReviewers.of(()), poll_interval=0.05)
    try:
        a = await broker.request(make_command(), make_decision(), fingerprint="fp")
        waiter = asyncio.create_task(broker.wait(a.id, 10))
        r = await asyncio.to_thread(
            run, app, "approvals", "approve", a.id, "--as", "alice", "-c", str(cfg)
        )
        assert r.exit_code == 0, r.output
        outcome = await asyncio.wait_for(waiter, 2)
        assert outcome.approved and outcome.reviewers == ("alice",)
    finally:
        store.close()
