"""RENAME cannot move a column out from under a column mask rule (the rule would name
nothing afterwards), nor can INHERIT, ATTACH PARTITION or SET SCHEMA make its rows
readable under a name the rule does not match; other renames are untouched."""

from __future__ import annotations

import pytest

from wardgate.pipeline.command import SessionInfo
from wardgate.policy.engine import PolicyEngine
from wardgate.policy.model import PolicySpec

SPEC = PolicySpec.model_validate(
    {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide",
                "verdict": "mask",
                "mask": {
                    "columns": ["hr.pay.salary", "*.ssn", "cw.diagnosis"],
                    "strategy": "redact",
                },
            }
        ],
    }
)


def _verdict(sql: str) -> tuple[str, str]:
    engine = PolicyEngine([SPEC], connection_policies={"orders": ["p"]})
    session = engine.session(SessionInfo("s", "ci-bot", (), "orders", "postgres", "127.0.0.1"))
    [(_, decision)] = session.evaluate(sql)
    return decision.verdict.value, decision.rule


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER SCHEMA hr RENAME TO h2",
        "ALTER TABLE hr.pay RENAME TO p2",
        "ALTER TABLE pay RENAME TO p2",  # unqualified: compared by bare name
        "ALTER TABLE hr.pay RENAME COLUMN salary TO s",
        "ALTER TABLE pay RENAME COLUMN salary TO s",
        "ALTER TABLE cw RENAME TO x",
        "ALTER VIEW cw RENAME TO x",
        "ALTER TABLE any_table RENAME COLUMN ssn TO s",
        "ALTER TABLE x.cw RENAME COLUMN diagnosis TO dx",
        # the rows read under another table or schema
        "ALTER TABLE cw INHERIT parent",
        "ALTER TABLE parent ATTACH PARTITION cw FOR VALUES FROM (0) TO (10)",
        "ALTER TABLE hr.pay SET SCHEMA other",
        "ALTER TABLE pay SET SCHEMA other",
    ],
)
def test_renames_that_slip_a_rule_are_refused(sql: str) -> None:
    assert _verdict(sql) == ("deny", "builtin/masked-column-rename")


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER SCHEMA other RENAME TO o2",
        "ALTER TABLE hr.pay RENAME COLUMN id TO i",
        "ALTER TABLE cw RENAME COLUMN id TO i",
        "ALTER TABLE other RENAME TO y",  # `*.ssn` still holds after a table rename
        "ALTER TABLE hr.other RENAME TO o3",
        "ALTER TABLE other INHERIT cw",
        "ALTER TABLE cw ATTACH PARTITION other FOR VALUES FROM (0) TO (10)",
        "ALTER TABLE other SET SCHEMA hr",
        "ALTER TABLE any_table INHERIT parent",  # `*.ssn` holds under the parent
    ],
)
def test_other_renames_are_allowed(sql: str) -> None:
    assert _verdict(sql)[0] == "allow"


def test_a_trigger_function_over_new_or_old_of_a_ruled_column_is_refused() -> None:
    for row in ("NEW", "OLD"):
        sql = (
            "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN INSERT INTO log VALUES "
            f"({row}.ssn); RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        assert _verdict(sql) == ("deny", "builtin/masked-column-copy")
    ok = "CREATE FUNCTION g() RETURNS trigger AS $$ BEGIN NEW.id := 1; RETURN NEW; END $$ LANGUAGE plpgsql"
    assert _verdict(ok)[0] == "allow"
