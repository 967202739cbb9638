"""Reading a column under a column rule while writing elsewhere is refused by the policy
itself, so `wardgate policy check` and the gateway agree."""

from __future__ import annotations

import pytest

from wardgate.pipeline.command import SessionInfo, Verdict
from wardgate.policy.engine import PolicyEngine
from wardgate.policy.model import PolicySpec

POLICY = PolicySpec.model_validate(
    {"name": "p", "include": ["baseline"],
     "rules": [{"name": "m", "verdict": "mask", "mask": {"columns": ["emp.ssn"]}}]}
)  # fmt: skip


def _verdict(sql: str) -> tuple[Verdict, str]:
    engine = PolicyEngine([POLICY], connection_policies={"c": ["p"]})
    session = engine.session(SessionInfo("s", "ci-bot", (), "c", "postgres", "127.0.0.1:1"))
    decision = session.evaluate(sql)[0][1]
    return decision.verdict, decision.rule


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO sink SELECT ssn FROM emp",
        "CREATE TABLE t2 AS SELECT ssn FROM emp",
        "CREATE VIEW v AS SELECT ssn AS x FROM emp",
        "CREATE MATERIALIZED VIEW mv AS SELECT e.ssn FROM emp e JOIN other o ON true",
        "WITH s AS (SELECT ssn FROM emp) INSERT INTO sink SELECT * FROM s",
        "UPDATE emp SET nick = ssn WHERE id = 1",
        "UPDATE emp e SET nick = upper(e.ssn) || '' WHERE id = 1",
        "UPDATE sink SET nick = e.ssn FROM emp e WHERE sink.id = e.id",
        "UPDATE sink SET nick = ssn FROM emp WHERE sink.id = emp.id",
        "INSERT INTO emp (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET nick = emp.ssn",
        "INSERT INTO emp (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET nick = ssn",
        "MERGE INTO sink s USING emp e ON s.id = e.id WHEN MATCHED THEN UPDATE SET nick = e.ssn",
        "MERGE INTO sink s USING emp e ON s.id = e.id "
        "WHEN NOT MATCHED THEN INSERT (id, nick) VALUES (e.id, e.ssn)",
        "ALTER TABLE emp ADD COLUMN s2 text GENERATED ALWAYS AS (ssn || '') STORED",
        "ALTER TABLE emp ALTER COLUMN nick TYPE text USING ssn",
        "ALTER TABLE emp ALTER COLUMN nick SET EXPRESSION AS (ssn)",
        "CREATE RULE r AS ON UPDATE TO emp DO ALSO INSERT INTO sink VALUES (NEW.id, NEW.ssn)",
        "CREATE RULE r AS ON DELETE TO emp DO ALSO INSERT INTO sink VALUES (OLD.ssn)",
        "CREATE RULE r AS ON UPDATE TO emp DO ALSO INSERT INTO sink VALUES (NEW::text)",
        # a trigger function's whole row: any table's, the ruled column included
        "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN RAISE NOTICE '%', NEW; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN INSERT INTO sink "
        "VALUES (to_jsonb(OLD)::text); RETURN OLD; END $$ LANGUAGE plpgsql",
    ],
)
def test_copies_are_refused(sql: str) -> None:
    assert _verdict(sql) == (Verdict.DENY, "builtin/masked-column-copy")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ssn FROM emp",
        "INSERT INTO emp (ssn) VALUES ('x')",
        "INSERT INTO sink SELECT name FROM emp",
        "UPDATE emp SET ssn = upper(ssn) WHERE id = 1",
        "UPDATE emp SET nick = 'x' WHERE ssn = '1'",
        "UPDATE emp SET ssn = NULL WHERE id = 1",
        "INSERT INTO emp (id, ssn) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET ssn = excluded.ssn",
        "MERGE INTO sink s USING emp e ON s.ssn = e.ssn WHEN MATCHED THEN UPDATE SET nick = 'x'",
        "ALTER TABLE emp ALTER COLUMN ssn TYPE varchar USING upper(ssn)",
        "ALTER TABLE emp ADD COLUMN z int CHECK (z > 0 AND ssn <> '')",
        "CREATE RULE r AS ON UPDATE TO emp DO ALSO INSERT INTO sink VALUES (NEW.id)",
        "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN NEW.nick := upper(NEW.nick); "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
    ],
)
def test_reads_and_plain_writes_are_not(sql: str) -> None:
    assert _verdict(sql)[1] != "builtin/masked-column-copy"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT most_common_vals FROM pg_stats",
        "SELECT s::text FROM pg_catalog.pg_stats s",
        "SELECT * FROM pg_stats_ext",
        "SELECT query FROM pg_stat_activity",
        "SELECT * FROM pg_stat_get_activity(NULL)",
        "SELECT data FROM pg_logical_slot_peek_changes('s', NULL, NULL)",
    ],
)
def test_catalogs_that_show_stored_values_read_every_column(sql: str) -> None:
    """Planner statistics, other sessions' statement texts and logical decoding show a
    covered column's values without naming it: they read every column, so the gateway
    masks their computed columns as the covered column (and a copy of them is refused)."""
    from wardgate.policy.masked_columns import ruled_column_read

    engine = PolicyEngine([POLICY], connection_policies={"c": ["p"]})
    session = engine.session(SessionInfo("s", "ci-bot", (), "c", "postgres", "127.0.0.1:1"))
    decision = session.evaluate(sql)[0][1]
    assert ruled_column_read(decision.masks, decision.facts["objects"]) is not None
    assert _verdict(f"CREATE TABLE x AS {sql}") == (Verdict.DENY, "builtin/masked-column-copy")
