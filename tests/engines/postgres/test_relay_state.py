"""The gateway's idea of what a statement or portal name runs must never differ from the
server's. Each test drives a raw protocol sequence (the agent controls every byte) that
once left the two apart, and checks that what runs is what was decided and recorded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import start_gateway
from tests.engines.postgres.test_robustness import _exchange, _login
from wardgate.testing.pgcluster import PgCluster
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.backend import decode_fields

SECRET_SALARY = "987654.32"


@pytest.fixture(scope="module")
def gw(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide-salary",
                "verdict": "mask",
                "mask": {"columns": ["rs_pay.salary"], "strategy": "redact"},
            }
        ],
    }
    gateway = start_gateway(
        tmp_path_factory.mktemp("gw-relay-state"),
        pg_cluster,
        extra={"policies": [policy]},
        connection_extra={"policies": ["p"]},
    )
    pg_cluster.psql(
        "orders",
        "drop table if exists rs_pay; create table rs_pay (id int, salary numeric); "
        f"grant all on rs_pay to app; insert into rs_pay values (1, {SECRET_SALARY}); "
        "drop table if exists rs_pay2; create table rs_pay2 (id int); grant all on rs_pay2 to app; "
        "insert into rs_pay2 values (1)",
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def _table(gw: Any, name: str) -> None:
    gw.cluster.psql(
        "orders",
        f"drop table if exists {name}; create table {name} (id int); grant all on {name} to app;"
        f" insert into {name} select generate_series(1, 3)",
    )


def _count(gw: Any, name: str) -> str:
    return gw.cluster.psql("orders", f"select count(*) from {name}")


def _errors(msgs: list) -> list[dict]:
    return [decode_fields(m[1]) for m in msgs if m[0] == ord("E")]


class _Session:
    def __init__(self, gw: Any) -> None:
        self.sock, _ = _login(gw.port)

    def send(self, data: bytes) -> list:
        return _exchange(self.sock, data)

    def send_async(self, data: bytes) -> dict:
        out: dict = {}

        def go() -> None:
            try:
                out["msgs"] = _exchange(self.sock, data)
            except Exception as exc:  # noqa: BLE001
                out["error"] = exc

        t = threading.Thread(target=go, daemon=True)
        t.start()
        out["thread"] = t
        return out

    def close(self) -> None:
        self.sock.sendall(w.terminate())
        self.sock.close()


def _run_or_held(gw: Any, s: _Session, data: bytes, table: str) -> None:
    """Send data; a statement held for review is not run (it may be held: then the hold
    is left to expire with the session)."""
    run = s.send_async(data)
    run["thread"].join(5)
    assert _count(gw, table) == "3", "the held DELETE ran without an approval"


def test_an_unnamed_statement_the_server_skipped_is_not_forgotten(gw: Any) -> None:
    """Parse "" = DELETE (held at Execute); then a Parse "" the server skips after an
    error: the server keeps the DELETE as its unnamed statement, so Bind/Execute of ""
    must still be held, not forwarded as an unknown statement."""
    _table(gw, "rs_unnamed")
    s = _Session(gw)
    try:
        s.send(w.parse("", "DELETE FROM rs_unnamed") + w.sync())
        msgs = s.send(
            w.parse("bad", "SELECT * FROM rs_no_such_table") + w.parse("", "SELECT 1") + w.sync()
        )
        assert _errors(msgs)
        _run_or_held(gw, s, w.bind("", "", (), (), ()) + w.execute("", 0) + w.sync(), "rs_unnamed")
    finally:
        s.close()


def test_a_bind_the_server_refused_does_not_rename_a_live_portal(gw: Any) -> None:
    """A named portal bound to a held DELETE, then a second Bind of the same portal name
    to SELECT 1 inside a savepoint: the server refuses the duplicate and keeps the
    DELETE portal (it outlives ROLLBACK TO SAVEPOINT), so Execute of it must be held."""
    _table(gw, "rs_portal")
    s = _Session(gw)
    try:
        s.send(w.query("BEGIN"))
        s.send(
            w.parse("d", "DELETE FROM rs_portal")
            + w.parse("one", "SELECT 1")
            + w.bind("p", "d", (), (), ())
            + w.sync()
        )
        s.send(w.query("SAVEPOINT sp"))
        msgs = s.send(w.bind("p", "one", (), (), ()) + w.sync())
        assert _errors(msgs) and _errors(msgs)[0]["C"] == "42P03"
        s.send(w.query("ROLLBACK TO SAVEPOINT sp"))
        run = s.send_async(w.execute("p", 0) + w.sync())
        run["thread"].join(5)
        tags = [m[1] for m in run.get("msgs", []) if m[0] == ord("C")]
        assert not any(t.startswith(b"DELETE") for t in tags), "the held DELETE ran"
    finally:
        s.close()
    assert _count(gw, "rs_portal") == "3"


def test_a_close_the_server_skipped_keeps_the_statement(gw: Any) -> None:
    """Close S "d" skipped by the server after an error: the server keeps "d"."""
    _table(gw, "rs_close")
    s = _Session(gw)
    try:
        s.send(w.parse("d", "DELETE FROM rs_close") + w.sync())
        msgs = s.send(
            w.parse("bad", "SELECT * FROM rs_no_such_table") + w.close("S", "d") + w.sync()
        )
        assert _errors(msgs)
        _run_or_held(gw, s, w.bind("", "d", (), (), ()) + w.execute("", 0) + w.sync(), "rs_close")
    finally:
        s.close()


def test_an_error_that_echoes_a_row_does_not_show_a_covered_value(gw: Any) -> None:
    """PostgreSQL echoes the failing row in an error's DETAIL ("Failing row contains
    (...)", "Key (...)=(...)"): an agent can provoke one to read a covered column."""
    gw.cluster.psql(
        "orders",
        "alter table rs_pay alter column id set not null",
    )
    s = _Session(gw)
    try:
        for msgs in (
            s.send(w.query("UPDATE rs_pay SET id = NULL WHERE id = 1")),
            s.send(
                w.parse("", "UPDATE rs_pay SET id = $1 WHERE id = 1")
                + w.bind("", "", (), (None,), ())
                + w.execute("", 0)
                + w.sync()
            ),
        ):
            [err] = _errors(msgs)
            assert err["C"] == "23502" and "D" in err, err
            assert SECRET_SALARY not in str(err), err
    finally:
        s.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT set_config('wg.x', (SELECT salary::text FROM rs_pay LIMIT 1), false)",
        "SELECT pg_notify('wg_chan', salary::text) FROM rs_pay",
        "SELECT setval('rs_seq', salary::bigint) FROM rs_pay",
    ],
)
def test_a_covered_value_is_not_laundered_through_session_state(gw: Any, sql: str) -> None:
    """set_config, pg_notify, setval... keep a value where a later statement (or the
    LISTENing agent) reads it without its column: reading a covered column into one is
    refused as a copy."""
    gw.cluster.psql(
        "orders", "create sequence if not exists rs_seq; grant all on sequence rs_seq to app"
    )
    s = _Session(gw)
    try:
        s.send(w.query("LISTEN wg_chan"))
        msgs = s.send(w.query(sql))
        [err] = _errors(msgs)
        assert err["C"] == "42501" and "masked-column-copy" in err["M"], err
        for later in ("SELECT current_setting('wg.x', true)", "SELECT last_value FROM rs_seq"):
            msgs += s.send(w.query(later))
        assert all(SECRET_SALARY.encode() not in m[1] for m in msgs), msgs
        assert all(b"987654" not in m[1] for m in msgs), msgs
    finally:
        s.close()
