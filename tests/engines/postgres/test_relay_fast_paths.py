"""The relay's speed paths, end to end: DataRow runs forwarded as one slice once the record
budget is spent (int-only results), masked results never taking that path, and result
events that wait for the next command event (and still reach the log on their own)."""

from __future__ import annotations

import hashlib
import time
import uuid

import psycopg

from tests.conftest import RunningGateway
from wardgate.wire.pg import writers as w


def _session_events(gw: RunningGateway, app: str) -> list:
    from wardgate.audit.store import AuditStore

    store = AuditStore.open(str(gw.directory / "audit.db"), read_only=True)
    try:
        session = next(
            e.session
            for e in store.events(kind="session_start")
            if e.meta.get("application_name") == app
        )
        return list(store.events(session=session))
    finally:
        store.close()


def _wait_for(gw: RunningGateway, app: str, predicate, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        try:
            events = _session_events(gw, app)
        except StopIteration:
            events = []
        if predicate(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_int_result_beyond_the_budget_is_counted_and_digested(gateway: RunningGateway) -> None:
    app = f"fast-{uuid.uuid4().hex[:8]}"
    n = 40_000  # ~1.4 MB of JSON lines: past the default 1 MiB budget
    with psycopg.connect(gateway.dsn(application_name=app), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT g, g * 7, -g, g %% 13 FROM generate_series(1, %s) AS g", (n,)
        ).fetchall()
    assert len(rows) == n
    assert rows[-1] == (n, 7 * n, -n, n % 13)
    events = _wait_for(gateway, app, lambda ev: any(e.kind == "session_end" for e in ev))
    result = next(e for e in events if e.kind == "result")
    sent = b"".join(w.data_row([str(v).encode() for v in row]) for row in rows)
    assert result.meta["rows_streamed"] == n
    assert result.meta["truncated"] is True
    assert 0 < result.meta["stored_rows"] < n
    assert result.meta["total_bytes"] == len(sent) - 5 * n
    assert result.meta["digest"] == hashlib.sha256(sent).hexdigest()


def test_masked_rows_past_the_budget_are_still_masked(gateway: RunningGateway) -> None:
    n = 20_000
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT g, 'user' || g || '@example.com' FROM generate_series(1, %s) AS g", (n,)
        ).fetchall()
    assert len(rows) == n
    leaked = [r for r in rows if r[1] == f"user{r[0]}@example.com"]
    assert leaked == []


def test_result_event_waits_for_the_next_command_and_keeps_order(
    gateway: RunningGateway,
) -> None:
    app = f"order-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(gateway.dsn(application_name=app), autocommit=True) as conn:
        conn.execute("SELECT 1 AS first_marker")
        conn.execute("SELECT 2 AS second_marker")
        # the session stays open: the last result event reaches the log on its own
        events = _wait_for(gateway, app, lambda ev: sum(e.kind == "result" for e in ev) >= 2)
        kinds = [e.kind for e in events if e.kind in ("command", "result")]
        assert kinds == ["command", "result", "command", "result"]
        assert not any(e.kind == "session_end" for e in events)
        commands = [e for e in events if e.kind == "command"]
        results = [e for e in events if e.kind == "result"]
        assert [r.meta["command_seq"] for r in results] == [c.seq for c in commands]
        assert [r.meta["tag"] for r in results] == ["SELECT 1", "SELECT 1"]
    events = _wait_for(gateway, app, lambda ev: any(e.kind == "session_end" for e in ev))
    assert events[-1].kind == "session_end"
