"""The bypass corpus through PolicySession.evaluate with the built-in baseline policy."""

from __future__ import annotations

import os

import pytest

from tests.corpus.load import SCHEMA_SQL, load_cases
from wardgate.pipeline.command import SessionInfo, Verdict
from wardgate.policy import PolicyEngine

_RANK = {"allow": 0, "review": 1, "deny": 2}
_ENGINE = PolicyEngine([])
_CASES = load_cases()


def _session():
    info = SessionInfo("s1", "ci-bot", ("ci",), "prod", "postgres", "127.0.0.1")
    return _ENGINE.session(info)


def _verdict(case) -> tuple[str, list]:
    session = _session()
    for stmt in case.setup:
        session.evaluate(stmt)
    results = session.evaluate(case.sql, via=case.via)
    worst = max((d.verdict.value for _, d in results), key=_RANK.__getitem__, default="allow")
    return worst, results


def test_corpus_is_big_enough() -> None:
    blocked = [c for c in _CASES if c.source == "blocked"]
    allowed = [c for c in _CASES if c.source == "allowed"]
    assert len(blocked) >= 150
    assert len(allowed) >= 100
    assert all(c.expect in ("deny", "review") for c in blocked)
    assert all(c.expect == "allow" for c in allowed)


@pytest.mark.parametrize("case", _CASES, ids=[c.id for c in _CASES])
def test_corpus_case(case) -> None:
    verdict, results = _verdict(case)
    detail = [(c.text, d.verdict.value, d.rule, d.reason) for c, d in results]
    assert verdict == case.expect, detail
    for command, decision in results:
        assert command.via == case.via
        if decision.verdict is not Verdict.ALLOW:
            assert "/" in decision.rule and decision.reason


def _pg_connect(cluster):
    psycopg = pytest.importorskip("psycopg")
    dsn = os.environ.get(
        "WARDGATE_TEST_PG",
        f"host={cluster.socket_dir} port={cluster.port} user=postgres dbname=orders",
    )
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, connect_timeout=3, cursor_factory=psycopg.ClientCursor
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {dsn} ({exc}): start one or set WARDGATE_TEST_PG")
    conn.prepare_threshold = None  # the corpus itself runs DEALLOCATE ALL
    return conn


def test_allowed_corpus_runs_on_real_postgres(pg_cluster) -> None:
    """Every allowed statement is real SQL that PostgreSQL accepts on the corpus schema."""
    conn = _pg_connect(pg_cluster)
    schema = f"wg_corpus_{os.getpid()}"
    failures = []
    try:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}, public")
        conn.execute(SCHEMA_SQL.read_text())
        for case in _CASES:
            if case.source != "allowed" or not case.runnable or case.via != "simple":
                continue
            if "ROLE" in case.sql.upper():
                continue  # roles are cluster-wide: not created from a test
            try:
                for stmt in case.setup:
                    conn.execute(stmt)
                conn.execute(case.sql)
                conn.execute("ROLLBACK") if conn.info.transaction_status != 0 else None
                for name in ("add_one", "touch", "total_for"):
                    conn.execute(f"DROP FUNCTION IF EXISTS {name} CASCADE")
                conn.execute("DEALLOCATE ALL")
                conn.execute(f"SET search_path = {schema}, public")  # the corpus resets it
            except Exception as exc:  # noqa: BLE001 - collect and report all
                failures.append((case.sql, str(exc).splitlines()[0]))
                conn.execute("ROLLBACK") if conn.info.transaction_status != 0 else None
                conn.execute(f"SET search_path = {schema}, public")
    finally:
        conn.execute("ROLLBACK") if conn.info.transaction_status != 0 else None
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()
    assert not failures, failures
