"""A reviewer sees the values that will run: an extended-protocol statement is held at its
Execute with its bound parameters, masked as the record masks them and bounded in size,
in the API, the CLI, the webhook text and the `approval_requested` event."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.approvals.helpers import make_command, make_decision
from tests.approvals.test_end_to_end import bearer, pending_for
from tests.conftest import start_gateway
from wardgate.approvals.broker import ApprovalBroker
from wardgate.approvals.model import (
    MAX_SHOWN_PARAMETER_CHARS,
    MAX_SHOWN_PARAMETERS,
    StaticReviewers,
    format_parameters,
    shown_parameters,
)
from wardgate.approvals.notify import notification_body
from wardgate.approvals.state import ApprovalState
from wardgate.audit.store import AuditStore
from wardgate.pipeline.command import Command
from wardgate.testing.pgcluster import PgCluster, free_port

EMAIL = "jane.doe@example.com"


# -- unit: what a request keeps and how it reads ----------------------------------------


def test_shown_parameters_cut_long_values_and_long_lists_and_say_so() -> None:
    long = "x" * (MAX_SHOWN_PARAMETER_CHARS + 500)
    shown = shown_parameters([None, "a", long])
    assert shown[:2] == (None, "a")
    assert shown[2].startswith("x" * MAX_SHOWN_PARAMETER_CHARS)
    assert f"{len(long):,} characters in all" in shown[2]
    many = shown_parameters([str(i) for i in range(MAX_SHOWN_PARAMETERS + 7)])
    assert len(many) == MAX_SHOWN_PARAMETERS + 1
    assert many[-1] == "… [7 more parameters not shown]"


def test_format_parameters_reads_like_sql() -> None:
    assert format_parameters(("a'b", None, "3")) == "$1='a''b', $2=NULL, $3='3'"
    assert format_parameters(()) == ""
    assert len(format_parameters(("y" * 500,), 40)) == 40


async def test_request_keeps_parameters_in_state_event_and_webhook(tmp_path: Path) -> None:
    store = AuditStore.open(str(tmp_path / "audit.db"))
    try:
        broker = ApprovalBroker(store, reviewers=StaticReviewers.of({"alice"}))
        base = make_command()
        command = Command(base.session, "DELETE FROM t WHERE id = $1", ("42", None), 0, "execute")
        a = await broker.request(command, make_decision(), fingerprint="fp")
        assert a.parameters == ("42", None)
        assert broker.pending()[0].parameters == ("42", None)  # through SQLite
        assert a.to_json()["parameters"] == ["42", None]
        [ev] = [e for e in store.events() if e.kind == "approval_requested"]
        assert ev.meta["parameters"] == ["42", None]
        text = notification_body("approval_requested", a, "json")["text"]
        assert "with $1='42', $2=NULL" in text
        slack = notification_body("approval_requested", a, "slack")
        assert any("$1='42'" in str(b) for b in slack["blocks"])
    finally:
        store.close()


def test_state_made_before_parameters_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE approvals (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, session TEXT NOT "
        "NULL, identity TEXT NOT NULL, connection TEXT NOT NULL, fingerprint TEXT NOT NULL, "
        "statement TEXT NOT NULL, rule TEXT NOT NULL, reason TEXT, application_name TEXT, "
        "client_addr TEXT, requested_at REAL NOT NULL, expires_at REAL NOT NULL, "
        "approvals_required INTEGER NOT NULL, status TEXT NOT NULL, decided_at REAL)"
    )
    db.execute(
        "INSERT INTO approvals VALUES ('ap-old', 'r', 's', 'ci-bot', 'prod', 'fp', "
        "'DELETE FROM t', 'rule', NULL, NULL, NULL, 1.0, 9e9, 1, 'pending', NULL)"
    )
    db.commit()
    db.close()
    state = ApprovalState(path)
    try:
        old = state.get("ap-old")
        assert old is not None and old.parameters == () and old.statement == "DELETE FROM t"
    finally:
        state.close()


# -- end to end: psycopg through a real gateway -----------------------------------------


@pytest.fixture(scope="module")
def gw(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    api_port = free_port()
    gateway = start_gateway(tmp_path_factory.mktemp("gw-params"), pg_cluster, api_port=api_port)
    gateway.api = f"http://127.0.0.1:{api_port}"  # type: ignore[attr-defined]
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def _run_in_thread(
    conn: psycopg.Connection, sql: str, params: tuple, *, prepare: bool | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["rowcount"] = conn.execute(sql, params, prepare=prepare).rowcount
        except psycopg.Error as exc:
            out["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    out["thread"] = t
    return out


def _decide(gw: Any, item: dict[str, Any], verb: str) -> None:
    r = httpx.post(
        f"{gw.api}/api/approvals/{item['id']}/{verb}",
        headers=bearer("alice"),
        json={"reason": "checked the values"},
    )
    assert r.status_code == 200, r.text


@pytest.mark.slow
def test_held_execute_shows_masked_bound_parameters_and_denial_runs_nothing(gw: Any) -> None:
    gw.cluster.psql(
        "orders",
        "create table xp_people (id int, email text); grant all on xp_people to app; "
        "insert into xp_people values (1, 'a@b.example'), (2, 'c@d.example')",
    )
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        # no WHERE: the baseline holds it; the new e-mail is a bound parameter
        run = _run_in_thread(conn, "UPDATE xp_people SET email = %s", (EMAIL,))
        item = pending_for(gw, "xp_people")
        assert "UPDATE xp_people SET email = $1" in item["statement"]
        [shown] = item["parameters"]
        assert shown and EMAIL not in shown and "jane.doe" not in shown  # masked
        _decide(gw, item, "deny")
        run["thread"].join(20)
        assert isinstance(run.get("error"), psycopg.errors.InsufficientPrivilege)
    assert (
        gw.cluster.psql("orders", "select count(*) from xp_people where email like 'jane%'") == "0"
    )
    events = _events(gw)
    [req] = [e for e in events if e[0] == "approval_requested" and "xp_people" in e[1]]
    assert EMAIL not in req[1] and json.loads(req[1])["parameters"] == [shown]


@pytest.mark.slow
def test_each_execute_is_held_with_its_own_values(gw: Any) -> None:
    gw.cluster.psql(
        "orders",
        "create table xp_rows (id int); grant all on xp_rows to app; "
        "insert into xp_rows select generate_series(1, 3)",
    )
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        # prepared once, run twice with different values: each Execute is its own request
        for value, verb in (("7", "approve"), ("9", "deny")):  # str: sent in text format
            run = _run_in_thread(conn, "UPDATE xp_rows SET id = %s::int", (value,), prepare=True)
            item = pending_for(gw, "xp_rows")
            assert item["parameters"] == [value]
            _decide(gw, item, verb)
            run["thread"].join(20)
            if verb == "approve":
                assert run.get("error") is None and run["rowcount"] == 3
            else:
                assert isinstance(run.get("error"), psycopg.errors.InsufficientPrivilege)
    assert (
        gw.cluster.psql("orders", "select string_agg(distinct id::text, ',') from xp_rows") == "7"
    )


def _events(gw: Any) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{gw.directory / 'audit.db'}?mode=ro", uri=True)
    try:
        return [(k, m) for k, m in db.execute("SELECT kind, meta FROM events ORDER BY seq")]
    finally:
        db.close()


@pytest.mark.slow
def test_a_second_parse_of_the_same_name_cannot_swap_in_a_held_statement(gw: Any) -> None:
    """Parse s1 = DELETE (held at Execute), Parse s1 = SELECT 1 again (the server refuses
    a duplicate name and keeps the DELETE): executing s1 must still be held, not run as
    if it were the SELECT."""
    gw.cluster.psql(
        "orders",
        "create table xp_swap (id int); grant all on xp_swap to app; "
        "insert into xp_swap select generate_series(1, 3)",
    )
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        pg = conn.pgconn
        r = pg.prepare(b"s1", b"DELETE FROM xp_swap")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK, r.error_message
        r = pg.prepare(b"s1", b"SELECT 1")
        assert r.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert r.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42P05"
        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.update(r=pg.exec_prepared(b"s1", [])))
        t.daemon = True
        t.start()
        item = pending_for(gw, "xp_swap")  # held, not run
        assert gw.cluster.psql("orders", "select count(*) from xp_swap") == "3"
        _decide(gw, item, "deny")
        t.join(20)
        assert out["r"].status == psycopg.pq.ExecStatus.FATAL_ERROR
    assert gw.cluster.psql("orders", "select count(*) from xp_swap") == "3"


@pytest.mark.slow
def test_a_statement_the_server_refused_leaves_no_name_behind(gw: Any) -> None:
    """Parse s2 fails at the server (no such table): the name is free again there, and
    the gateway must not keep deciding s2 as the failed statement."""
    gw.cluster.psql(
        "orders",
        "create table xp_free (id int); grant all on xp_free to app; "
        "insert into xp_free select generate_series(1, 3)",
    )
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        pg = conn.pgconn
        r = pg.prepare(b"s2", b"SELECT * FROM xp_no_such_table")
        assert r.status == psycopg.pq.ExecStatus.FATAL_ERROR
        r = pg.prepare(b"s2", b"DELETE FROM xp_free")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK, r.error_message
        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.update(r=pg.exec_prepared(b"s2", [])))
        t.daemon = True
        t.start()
        item = pending_for(gw, "xp_free")
        assert gw.cluster.psql("orders", "select count(*) from xp_free") == "3"
        _decide(gw, item, "deny")
        t.join(20)
    assert gw.cluster.psql("orders", "select count(*) from xp_free") == "3"


@pytest.mark.slow
@pytest.mark.parametrize("drop", ["DEALLOCATE s3", "DEALLOCATE ALL", "DISCARD ALL"])
def test_a_name_freed_by_sql_can_be_parsed_again(gw: Any, drop: str) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        pg = conn.pgconn
        assert pg.prepare(b"s3", b"SELECT 1").status == psycopg.pq.ExecStatus.COMMAND_OK
        r = pg.exec_(drop.encode())
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK, r.error_message
        r = pg.prepare(b"s3", b"SELECT 2")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK, r.error_message
        r = pg.exec_prepared(b"s3", [])
        assert r.status == psycopg.pq.ExecStatus.TUPLES_OK and r.get_value(0, 0) == b"2"
