"""A statement prepared while a time window allowed it is refused once the window closes.

The decision is made at Parse; with time-window rules the relay decides again at each
Execute, so `prepare once, execute forever` does not outlive the window.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.conftest import start_gateway
from wardgate.testing.pgcluster import PgCluster

pytestmark = pytest.mark.slow


def test_prepared_statement_is_refused_when_its_window_closes(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    # far enough ahead for a gateway start on a loaded machine (writer process included)
    start = now + timedelta(seconds=10)
    if start.date() != now.date() or start.hour == 23 and start.minute >= 58:
        pytest.skip("too close to midnight UTC for a same-day window")
    end = min(start + timedelta(hours=1), start.replace(hour=23, minute=59, second=59))
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "no-deletes-in-freeze",
                "verdict": "deny",
                "reason": "change freeze",
                "kinds": ["delete"],
                "time_windows": [
                    {"start": start.strftime("%H:%M:%S"), "end": end.strftime("%H:%M:%S")}
                ],
            }
        ],
    }
    gw = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["p"]}
    )
    pg_cluster.psql(
        "orders",
        "drop table if exists freeze_t; create table freeze_t (id int); "
        "insert into freeze_t select generate_series(1, 10); grant all on freeze_t to app",
    )
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            sql = "DELETE FROM freeze_t WHERE id = %s"
            assert datetime.now(UTC) < start - timedelta(seconds=1), "the window began too soon"
            assert conn.execute(sql, (1,), prepare=True).rowcount == 1  # before the window
            time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + 0.5)
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="change freeze"):
                conn.execute(sql, (2,), prepare=True)  # Bind + Execute of the prepared one
            # the session goes on; a fresh Parse is refused too
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql, (3,))
            assert conn.execute("SELECT count(*) FROM freeze_t").fetchone() == (9,)
    finally:
        gw.proc.stop()
    out = pg_cluster.psql("orders", "select count(*) from freeze_t")
    assert "9" in out
