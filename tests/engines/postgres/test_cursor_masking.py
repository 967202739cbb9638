"""Rows fetched from a cursor are masked as the query the cursor was declared with:
FETCH (SQL) and a protocol Execute of the cursor's name name only the cursor, so the
policy session remembers what each DECLARE read (as it does for PREPARE / EXECUTE), and
the relay asks the target for the cursor's columns (Describe) before its rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engines.postgres import test_relay_state as base
from tests.engines.postgres.test_relay_state import SECRET_SALARY, _Session
from wardgate.wire.pg import writers as w

gw = base.gw  # the same module fixture: a gateway with a column rule on rs_pay.salary


def test_a_cursor_declared_under_a_stale_portal_name_is_masked(gw: Any) -> None:
    """A protocol portal "p" ends with its transaction at the server; a cursor declared
    in SQL under the same name later and fetched with a protocol Execute must be masked
    as the cursor's rows, not planned as the old portal's statement."""
    s = _Session(gw)
    try:
        s.send(
            w.parse("one", "SELECT 1")
            + w.describe("S", "one")
            + w.bind("p", "one", (), (), ())
            + w.execute("p", 0)
            + w.sync()
        )
        s.send(w.query("BEGIN; DECLARE p CURSOR FOR SELECT salary FROM rs_pay"))
        msgs = s.send(w.execute("p", 0) + w.sync())
        rows = [m for m in msgs if m[0] == ord("D")]
        assert rows, msgs
        assert all(SECRET_SALARY.encode() not in m[1] for m in rows), rows
        s.send(w.query("COMMIT"))
    finally:
        s.close()
    blobs = b"".join(f.read_bytes() for f in Path(gw.directory).glob("audit.db*"))
    assert SECRET_SALARY.encode() not in blobs


@pytest.mark.parametrize(
    "query",
    [
        "SELECT salary FROM rs_pay",
        "SELECT salary::text || '' AS s FROM rs_pay",
        "SELECT row_to_json(r) FROM rs_pay r",
    ],
)
@pytest.mark.parametrize("via", ["sql", "protocol"])
def test_rows_fetched_from_a_cursor_are_masked_as_its_query(gw: Any, query: str, via: str) -> None:
    """FETCH names only the cursor: its rows are masked as the query it was declared with
    (a computed column of a covered column included), whether fetched by SQL FETCH or by
    a protocol Execute of the cursor's name."""
    s = _Session(gw)
    try:
        s.send(w.query(f"BEGIN; DECLARE c CURSOR FOR {query}"))
        if via == "sql":
            msgs = s.send(w.query("FETCH ALL FROM c"))
        else:
            msgs = s.send(w.execute("c", 0) + w.sync())
        rows = [m for m in msgs if m[0] == ord("D")]
        assert rows, msgs
        assert all(SECRET_SALARY.encode() not in m[1] for m in rows), rows
        s.send(w.query("COMMIT"))
    finally:
        s.close()


@pytest.mark.parametrize("via", ["sql", "protocol"])
def test_a_cursor_opened_by_a_function_is_masked_as_reading_any_column(gw: Any, via: str) -> None:
    """A cursor the gateway saw no DECLARE of (opened inside a function under a name the
    caller chose) may read any column: its computed columns are masked (fail closed)."""
    gw.cluster.psql(
        "orders",
        "create or replace function rs_open(name refcursor) returns refcursor "
        "language plpgsql as $$ begin open name for select salary::text || '' as s "
        "from rs_pay; return name; end $$; grant execute on function rs_open to app",
    )
    s = _Session(gw)
    try:
        s.send(w.query("BEGIN; SELECT rs_open('k')"))
        if via == "sql":
            msgs = s.send(w.query("FETCH ALL FROM k"))
        else:
            msgs = s.send(w.execute("k", 0) + w.sync())
        rows = [m for m in msgs if m[0] == ord("D")]
        assert rows, msgs
        assert all(SECRET_SALARY.encode() not in m[1] for m in rows), rows
        s.send(w.query("COMMIT"))
    finally:
        s.close()


def test_a_held_cursor_keeps_its_query_after_commit(gw: Any) -> None:
    s = _Session(gw)
    try:
        s.send(w.query("DECLARE h CURSOR WITH HOLD FOR SELECT salary::text AS s FROM rs_pay"))
        msgs = s.send(w.query("FETCH ALL FROM h"))
        rows = [m for m in msgs if m[0] == ord("D")]
        assert rows and all(SECRET_SALARY.encode() not in m[1] for m in rows), msgs
        s.send(w.query("CLOSE h"))
    finally:
        s.close()
    blobs = b"".join(f.read_bytes() for f in Path(gw.directory).glob("audit.db*"))
    assert SECRET_SALARY.encode() not in blobs


def test_a_computed_unqualified_column_over_two_tables_is_masked(gw: Any) -> None:
    """`salary` unqualified in a statement over two tables: the ruled column it may be
    is matched with no table (fail closed), not with an empty table name."""
    s = _Session(gw)
    try:
        msgs = s.send(
            w.query("SELECT salary::text || '' AS s FROM rs_pay, (VALUES (1)) v(x), rs_pay2")
        )
        rows = [m for m in msgs if m[0] == ord("D")]
        assert rows, msgs
        assert all(SECRET_SALARY.encode() not in m[1] for m in rows), rows
    finally:
        s.close()
