"""SQL PREPARE and protocol Parse share one namespace on the server; the gateway's idea of
what `EXECUTE name` runs must follow every way the name can change:

- a protocol Close of a SQL-prepared name drops it on the server; a protocol Parse of
  the name then makes it a DELETE (Parse runs nothing, so it is not held), and SQL
  `EXECUTE name` was decided as the old `SELECT 1`: the DELETE ran unreviewed;
- a DO block that runs `EXECUTE 'DEALLOCATE name'` did the same without a word the
  session's top-level statements showed.

Raw protocol bytes through a real gateway and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import start_gateway
from tests.engines.postgres.test_relay_state import _count, _errors, _Session, _table
from wardgate.testing.pgcluster import PgCluster
from wardgate.wire.pg import writers as w


@pytest.fixture
def gw(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Any]:
    gateway = start_gateway(
        tmp_path, pg_cluster, extra={"approvals": {"default_ttl": "0.5s", "poll_interval": "0.1s"}}
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


DROPS = [
    pytest.param(lambda: w.close("S", "p") + w.sync(), id="protocol-close"),
    pytest.param(
        lambda: w.query("DO $$BEGIN EXECUTE 'DEALLOCATE p'; END$$"), id="do-block-deallocate"
    ),
]


@pytest.mark.parametrize("drop", DROPS)
def test_execute_of_a_name_prepared_again_through_the_protocol_is_not_run_as_the_old_one(
    gw: Any, drop: Any
) -> None:
    _table(gw, "pn_rows")
    s = _Session(gw)
    try:
        assert not _errors(s.send(w.query("PREPARE p AS SELECT 1")))
        assert not _errors(s.send(drop()))
        # a DELETE without WHERE: held for review at Execute, so Parse goes through
        assert not _errors(s.send(w.parse("p", "DELETE FROM pn_rows") + w.sync()))
        msgs = s.send(w.query("EXECUTE p"))
        errors = _errors(msgs)
        assert errors and "wardgate" in errors[0]["M"], msgs
        assert _count(gw, "pn_rows") == "3", "the DELETE ran as if it were SELECT 1"
        # the session still works, and a name PREPAREd again is known again
        assert not _errors(s.send(w.query("DEALLOCATE ALL; PREPARE p AS SELECT 2")))
        msgs = s.send(w.query("EXECUTE p"))
        assert not _errors(msgs) and any(m[0] == ord("D") for m in msgs)
    finally:
        s.close()


def test_a_protocol_statement_swapped_inside_a_do_block_is_not_run_as_the_old_one(
    gw: Any,
) -> None:
    """The relay's own map of protocol statements: after a DO block that deallocates
    and prepares `s` again, Bind/Execute of `s` must not be decided as the old one."""
    _table(gw, "pn_rows2")
    s = _Session(gw)
    try:
        assert not _errors(s.send(w.parse("s", "SELECT 1") + w.sync()))
        assert not _errors(
            s.send(
                w.query(
                    "DO $$BEGIN EXECUTE 'DEALLOCATE s'; "
                    "EXECUTE 'PREPARE s AS DELETE FROM pn_rows2 WHERE id > 0'; END$$"
                )
            )
        )
        msgs = s.send(w.bind("", "s", (), (), ()) + w.execute("", 0) + w.sync())
        assert _errors(msgs), msgs  # not known any more: refused
        assert _count(gw, "pn_rows2") == "3"
    finally:
        s.close()


def _function_call(oid: int, args: list[bytes]) -> bytes:
    body = oid.to_bytes(4, "big") + (1).to_bytes(2, "big") + (0).to_bytes(2, "big")
    body += len(args).to_bytes(2, "big")
    for a in args:
        body += len(a).to_bytes(4, "big") + a
    body += (0).to_bytes(2, "big")
    return b"F" + (len(body) + 4).to_bytes(4, "big") + body


def test_a_fastpath_function_call_is_refused_and_runs_nothing(gw: Any) -> None:
    """FunctionCall ('F') calls any function by OID, past statement policy."""
    oid = int(gw.cluster.psql("orders", "SELECT 'lo_create(oid)'::regprocedure::oid"))
    before = gw.cluster.psql("orders", "SELECT count(*) FROM pg_largeobject_metadata")
    s = _Session(gw)
    try:
        msgs = s.send(_function_call(oid, [b"424242"]))
        errors = _errors(msgs)
        assert errors and "function-call" in errors[0]["M"], msgs
        assert not _errors(s.send(w.query("SELECT 1")))  # still usable
    finally:
        s.close()
    after = gw.cluster.psql("orders", "SELECT count(*) FROM pg_largeobject_metadata")
    assert after == before


@pytest.fixture
def masked_gw(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Any]:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide",
                "verdict": "mask",
                "mask": {"columns": ["pn_pay.salary"], "strategy": "redact"},
            }
        ],
    }
    gateway = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["p"]}
    )
    pg_cluster.psql(
        "orders",
        "DROP TABLE IF EXISTS pn_pay; CREATE TABLE pn_pay (id int, salary text); "
        "INSERT INTO pn_pay VALUES (1, 'SECRET-987'); ALTER TABLE pn_pay OWNER TO app",
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


@pytest.mark.parametrize("prepared_in_sql", [False, True])
def test_fetch_of_a_cursor_name_bound_again_through_the_protocol_reads_what_was_bound(
    masked_gw: Any, prepared_in_sql: bool
) -> None:
    """SQL cursors are portals: after DECLARE c (SELECT 1) and a protocol Close of c, a
    protocol Bind of portal c to a query over a covered column made SQL `FETCH c` read
    it, masked as the old SELECT 1 (not at all)."""
    s = _Session(masked_gw)
    try:
        assert not _errors(s.send(w.query("BEGIN; DECLARE c CURSOR FOR SELECT 1")))
        query = "SELECT salary || '' FROM pn_pay"
        if prepared_in_sql:
            assert not _errors(s.send(w.query(f"PREPARE q AS {query}")))
            parse = b""
        else:
            parse = w.parse("q", query)
        msgs = s.send(w.close("P", "c") + parse + w.bind("c", "q", (), (), ()) + w.sync())
        assert not _errors(msgs), msgs
        msgs = s.send(w.query("FETCH ALL FROM c"))
        assert b"SECRET-987" not in b"".join(m[1] for m in msgs), msgs
        s.send(w.query("ROLLBACK"))
    finally:
        s.close()
