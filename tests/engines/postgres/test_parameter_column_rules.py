"""A column mask rule covers bound parameters too: a statement that names a covered
column has every parameter redacted whole in the record and in an approval request
(a parameter's column is not known from the text: fail closed), as string literals of
such a statement are. Before, the record scanned parameters for entities only, so a
value with no recognisable shape (a diagnosis, a salary) bound to a covered column was
recorded as sent."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.approvals.test_end_to_end import bearer, pending_for
from tests.conftest import start_gateway
from wardgate.testing.pgcluster import PgCluster, free_port

SECRET = "acute zebra fever"


def test_bound_values_of_a_covered_column_never_reach_the_record(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide-diagnosis",
                "verdict": "mask",
                "mask": {"columns": ["patients.diagnosis"], "strategy": "redact"},
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
    pg_cluster.psql(
        "orders",
        "drop table if exists patients; create table patients (id int, diagnosis text); "
        "grant all on patients to app",
    )
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO patients (id, diagnosis) VALUES (%s, %s)", (1, SECRET))
            conn.execute("UPDATE patients SET diagnosis = %s WHERE id = %s", (SECRET, 1))
            with conn.cursor(binary=True) as cur:  # binary text parameters too
                cur.execute("UPDATE patients SET diagnosis = %s WHERE id = %s", (SECRET, 1))
            # no WHERE: held; the reviewer sees the parameter redacted
            out: dict[str, Any] = {}

            def run() -> None:
                try:
                    conn.execute("UPDATE patients SET diagnosis = %s", (SECRET,))
                except psycopg.Error as exc:
                    out["error"] = exc

            t = threading.Thread(target=run, daemon=True)
            t.start()
            gw.api = f"http://127.0.0.1:{api_port}"
            item = pending_for(gw, "patients")
            assert item["parameters"] == ["[REDACTED]"]
            r = httpx.post(
                f"{gw.api}/api/approvals/{item['id']}/deny",
                headers=bearer("alice"),
                json={"reason": "no"},
            )
            assert r.status_code == 200, r.text
            t.join(20)
            assert "error" in out
    finally:
        gw.proc.stop()
    assert pg_cluster.psql("orders", "select count(*) from patients") == "1"
    blobs = b"".join(f.read_bytes() for f in tmp_path.glob("audit.db*"))
    assert SECRET.encode() not in blobs and b"zebra" not in blobs


def test_literals_of_any_spelling_for_a_covered_column_never_reach_the_record(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    """Dollar quotes, E'' strings with escaped quotes and numbers, in a statement that
    names a covered column: every constant is replaced in the record (the parser's own
    normalisation), not only plain '...' strings."""
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide",
                "verdict": "mask",
                "mask": {"columns": ["wards.diagnosis", "wards.salary"], "strategy": "redact"},
            }
        ],
    }
    gw: Any = start_gateway(
        tmp_path, pg_cluster, extra={"policies": [policy]}, connection_extra={"policies": ["p"]}
    )
    pg_cluster.psql(
        "orders",
        "drop table if exists wards; create table wards (id int, diagnosis text, "
        "salary numeric); insert into wards values (1, 'x', 1); grant all on wards to app",
    )
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            conn.execute("UPDATE wards SET diagnosis = $$acute zebra fever$$ WHERE id = 1")
            conn.execute("UPDATE wards SET diagnosis = E'it\\'s quagga pox' WHERE id = 1")
            conn.execute("UPDATE wards SET salary = 987654.32 WHERE id = 1")
            conn.execute("UPDATE wards SET diagnosis = $t$okapi flu$t$ /* note */ WHERE id = 1")
            # a utility statement: pglast's normalize leaves its constants in place
            conn.execute("PREPARE q AS UPDATE wards SET salary = 555444.33 WHERE id = 1")
    finally:
        gw.proc.stop()
    assert pg_cluster.psql("orders", "select diagnosis, salary from wards") == "okapi flu|987654.32"
    blobs = b"".join(f.read_bytes() for f in tmp_path.glob("audit.db*"))
    for word in (b"zebra", b"quagga", b"987654", b"okapi", b"555444"):
        assert word not in blobs, word
    assert b"UPDATE wards SET diagnosis = $1 WHERE id = $2" in blobs  # still readable
