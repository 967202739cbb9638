"""SQL PREPARE, then EXECUTE: the EXECUTE's text does not say what runs. A reviewer is
shown the PREPARE too; a standing grant covers the pair, so a grant for `EXECUTE x` does
not cover x prepared again as something else; and the EXECUTE's arguments for a
statement that names a column under a column rule are recorded without constants."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.approvals.test_end_to_end import bearer, pending_for
from tests.conftest import start_gateway
from wardgate.testing.pgcluster import PgCluster, free_port

SALARY = "987654.32"


def _held(conn: psycopg.Connection, sql: str) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["rowcount"] = conn.execute(sql).rowcount
        except psycopg.Error as exc:
            out["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    out["thread"] = t
    return out


def _decide(api: str, item: dict, verb: str, **extra: Any) -> None:
    r = httpx.post(
        f"{api}/api/approvals/{item['id']}/{verb}",
        headers=bearer("alice"),
        json={"reason": "checked", **extra},
    )
    assert r.status_code == 200, r.text


def _prepare(gw: Any, conn: psycopg.Connection, sql: str) -> None:
    """A PREPARE of a held statement is held itself: approve it."""
    run = _held(conn, sql)
    _decide(gw.api, pending_for(gw, "PREPARE x"), "approve")
    run["thread"].join(20)
    assert run.get("error") is None, run


def test_execute_of_a_prepared_statement_shows_it_and_a_grant_covers_only_it(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide-salary",
                "verdict": "mask",
                "mask": {"columns": ["pr_pay.salary"], "strategy": "redact"},
            }
        ],
    }
    api_port = free_port()
    gw: Any = start_gateway(
        tmp_path,
        pg_cluster,
        api_port=api_port,
        extra={"policies": [policy]},
        connection_extra={"policies": ["p"]},
    )
    api = f"http://127.0.0.1:{api_port}"
    gw.api = api
    pg_cluster.psql(
        "orders",
        "drop table if exists pr_rows, pr_pay; create table pr_rows (id int); "
        "create table pr_pay (id int, salary numeric); grant all on pr_rows, pr_pay to app; "
        "insert into pr_rows select generate_series(1, 3); insert into pr_pay values (1, 1)",
    )
    conn = psycopg.connect(gw.dsn(), autocommit=True)
    try:
        _prepare(gw, conn, "PREPARE x AS UPDATE pr_rows SET id = $1")  # no WHERE: held
        run = _held(conn, "EXECUTE x(7)")
        item = pending_for(gw, "EXECUTE x")  # the reviewer sees the prepared statement
        assert "EXECUTE x(7)" in item["statement"]
        assert "UPDATE pr_rows SET id = $1" in item["statement"]
        _decide(api, item, "approve", **{"for": "1h"})
        run["thread"].join(20)
        assert run.get("error") is None and run["rowcount"] == 3
        run = _held(conn, "EXECUTE x(7)")  # the grant answers at once
        run["thread"].join(20)
        assert not run["thread"].is_alive() and run.get("error") is None, run
        assert pg_cluster.psql("orders", "select count(*) from pr_rows where id = 7") == "3"
        # the same EXECUTE text, another statement behind the name: held again
        conn.execute("DEALLOCATE x")
        _prepare(gw, conn, "PREPARE x AS DELETE FROM pr_rows")
        run = _held(conn, "EXECUTE x(7)")
        item = pending_for(gw, "EXECUTE x")
        assert "DELETE FROM pr_rows" in item["statement"]
        assert pg_cluster.psql("orders", "select count(*) from pr_rows") == "3"
        _decide(api, item, "deny")
        run["thread"].join(20)
        assert isinstance(run.get("error"), psycopg.errors.InsufficientPrivilege)
        # arguments bound to a covered column, recorded without constants
        conn.execute("PREPARE s AS UPDATE pr_pay SET salary = $1 WHERE id = $2")
        conn.execute(f"EXECUTE s({SALARY}, 1)")
        conn.execute(f"EXECUTE s('{SALARY}', 1)")
    finally:
        gw.proc.stop()  # first: a statement still held ends with the gateway
        conn.close()
    assert pg_cluster.psql("orders", "select count(*) from pr_rows") == "3"
    assert pg_cluster.psql("orders", "select salary from pr_pay") == SALARY
    blobs = b"".join(f.read_bytes() for f in tmp_path.glob("audit.db*"))
    assert b"987654" not in blobs
