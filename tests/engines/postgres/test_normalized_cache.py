"""The policy's normalized-text cache must not carry a decision between statements whose
constants decided it. `DELETE ... WHERE x LIKE 'zz%'` and `... LIKE '%'` normalise to
the same text (`LIKE $1`); the first, allowed, was cached, and the second then deleted
every row without the review `baseline/review-without-where` asks for. Likewise
`x = 1 OR 1 = 2` / `OR 1 = 1` and `a + 1 = a + 2` / `a + 1 = a + 1`. The cache is
shared by every session of the gateway, so one agent's statement could open the way
for another's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from wardgate.testing.pgcluster import PgCluster


@pytest.fixture
def gw(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[RunningGateway]:
    gateway = start_gateway(
        tmp_path, pg_cluster, extra={"approvals": {"default_ttl": "0.3s", "poll_interval": "0.1s"}}
    )
    pg_cluster.psql(
        "orders",
        "DROP TABLE IF EXISTS ncache; CREATE TABLE ncache (id int, x text); "
        "INSERT INTO ncache SELECT g, 'row ' || g FROM generate_series(1, 5) g; "
        "ALTER TABLE ncache OWNER TO app",
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("DELETE FROM ncache WHERE x LIKE 'zz%'", "DELETE FROM ncache WHERE x LIKE '%'"),
        ("DELETE FROM ncache WHERE x ~ 'zz'", "DELETE FROM ncache WHERE x ~ '.*'"),
        ("DELETE FROM ncache WHERE id = 0 OR 1 = 2", "DELETE FROM ncache WHERE id = 0 OR 1 = 1"),
        ("DELETE FROM ncache WHERE id + 1 = id + 2", "DELETE FROM ncache WHERE id + 1 = id + 1"),
    ],
)
def test_a_tautology_is_held_after_a_statement_of_the_same_normalized_text(
    gw: RunningGateway, first: str, second: str
) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.execute(first)  # allowed: it deletes nothing
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:  # another session
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="wardgate"):
            conn.execute(second)
        assert conn.execute("SELECT count(*) FROM ncache").fetchone() == (5,)


@pytest.mark.parametrize(
    "sql",
    ["DELETE FROM ncache WHERE ncache.x = x", "DELETE FROM ncache AS n WHERE x = n.x"],
)
def test_a_column_compared_with_itself_under_another_name_is_without_where(
    gw: RunningGateway, sql: str
) -> None:
    """`t.x = x` is the same column on both sides: true on every row where x is set."""
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        # held by baseline/review-without-where; nobody approves within the TTL
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="timed out"):
            conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM ncache").fetchone() == (5,)


def test_is_not_null_on_a_column_is_without_where(gw: RunningGateway) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="timed out"):
            conn.execute("DELETE FROM ncache WHERE x IS NOT NULL")
        assert conn.execute("SELECT count(*) FROM ncache").fetchone() == (5,)
