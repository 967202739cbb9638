"""Reads the FROM clause does not show, and unqualified names under an unknown
search_path: what rules match (see tests/engines/postgres/test_indirect_reads.py for the
same through a gateway)."""

from __future__ import annotations

import pytest

from wardgate.pipeline.command import SessionInfo, Verdict
from wardgate.policy import PolicyEngine, PolicySpec
from wardgate.policy.pgtree import qualified_name


def _session(rules: list[dict], default: str = "allow"):
    spec = PolicySpec.model_validate(
        {"name": "p", "include": ["baseline"], "default": default, "rules": rules}
    )
    engine = PolicyEngine([spec], connection_policies={"prod": ["p"]})
    return engine.session(SessionInfo("s1", "ci-bot", ("ci",), "prod", "postgres", "127.0.0.1"))


def _one(session, sql: str):
    ((_, decision),) = session.evaluate(sql)
    return decision


DENY_PAY = [{"name": "no-pay", "verdict": "deny", "objects": {"tables": ["hr.pay"]}}]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT table_to_xml('hr.pay', true, false, '')",
        "SELECT pg_catalog.table_to_xmlschema('hr.pay'::regclass, true, false, '')",
        "SELECT table_to_xml(16384::regclass, true, false, '')",  # an OID: any table
        "SELECT table_to_xml(t, true, false, '') FROM (VALUES ('hr.pay')) v(t)",
        "SELECT schema_to_xml('hr', true, false, '')",
        "SELECT database_to_xml_and_xmlschema(true, false, '')",
        "ALTER SCHEMA hr RENAME TO hx",
    ],
)
def test_reads_and_renames_of_a_denied_table_by_another_name(sql: str) -> None:
    d = _one(_session(DENY_PAY), sql)
    assert (d.verdict, d.rule) == (Verdict.DENY, "p/no-pay")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT table_to_xml('public.pay', true, false, '')",
        "SELECT schema_to_xml('public', true, false, '')",
        "ALTER SCHEMA other RENAME TO hx",
    ],
)
def test_other_tables_and_schemas_are_not_matched(sql: str) -> None:
    assert _one(_session(DENY_PAY), sql).verdict is Verdict.ALLOW


def test_literal_table_names_are_not_reused_across_constants() -> None:
    s = _session(DENY_PAY)
    assert _one(s, "SELECT table_to_xml('public.x', true, false, '')").verdict is Verdict.ALLOW
    assert _one(s, "SELECT table_to_xml('hr.pay', true, false, '')").verdict is Verdict.DENY


def test_cursor_to_xml_reads_what_the_cursor_reads() -> None:
    mask = [
        {
            "name": "hide",
            "verdict": "mask",
            "mask": {"columns": ["esc.diagnosis"], "strategy": "redact"},
        }
    ]
    s = _session(mask)
    _one(s, "DECLARE c CURSOR FOR SELECT diagnosis FROM esc")
    d = _one(s, "SELECT cursor_to_xml('c', 10, false, false, '')")
    assert "column:esc.diagnosis" in d.facts["objects"]
    d = _one(s, "SELECT cursor_to_xml('other', 10, false, false, '')")
    assert "unknown_cursor" in d.facts["features"]


def test_after_a_search_path_change_allow_rules_do_not_take_unqualified_names_as_public() -> None:
    s = _session(
        [
            {
                "name": "public-reads",
                "verdict": "allow",
                "kinds": ["select"],
                "objects": {"tables": ["public.*"]},
            },
            {"name": "any-schema", "verdict": "allow", "objects": {"tables": ["*.orders"]}},
            {"name": "settings", "verdict": "allow", "kinds": ["set"]},
        ],
        default="deny",
    )
    assert _one(s, "SELECT * FROM pay").rule == "p/public-reads"
    assert _one(s, "SET search_path = hr").verdict is Verdict.ALLOW
    d = _one(s, "SELECT * FROM pay")  # hr.pay now
    assert (d.verdict, d.rule) == (Verdict.DENY, "p/<default>")
    assert _one(s, "SELECT * FROM public.pay").rule == "p/public-reads"
    assert _one(s, "SELECT * FROM orders").rule == "p/any-schema"


def test_after_a_search_path_change_an_unless_does_not_take_unqualified_names_as_public() -> None:
    s = _session(
        [
            {
                "name": "no-writes",
                "verdict": "deny",
                "writes": True,
                "unless": {"objects": {"tables": ["public.scratch"]}},
            }
        ]
    )
    assert _one(s, "INSERT INTO scratch VALUES (1)").verdict is Verdict.ALLOW
    _one(s, "SET search_path = hr")
    assert _one(s, "INSERT INTO scratch VALUES (1)").verdict is Verdict.DENY


def test_wildcard_reads_do_not_satisfy_allow_rules() -> None:
    s = _session(
        [{"name": "orders", "verdict": "allow", "objects": {"tables": ["public.orders"]}}],
        default="deny",
    )
    assert _one(s, "SELECT database_to_xml(true, false, '')").verdict is Verdict.DENY
    assert _one(s, "SELECT table_to_xml('orders', true, false, '')").verdict is Verdict.ALLOW


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("pay", ["pay"]),
        ("HR.Pay", ["hr", "pay"]),
        (' "HR" . "p""y" ', ["HR", 'p"y']),
        ("db.hr.pay", ["db", "hr", "pay"]),
        ("Été", ["Été"]),  # only ASCII letters fold, as in PostgreSQL
        ("16384", None),
        ("a.b.c.d", None),
        ("pay; drop table x", None),
        ("", None),
        ("a.", None),
    ],
)
def test_qualified_name(text: str, parts: list[str] | None) -> None:
    assert qualified_name(text) == parts


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("DELETE FROM t WHERE x LIKE 'a%'", "DELETE FROM t WHERE x LIKE '%'"),
        ("UPDATE t SET a = 1 WHERE x ILIKE 'q'", "UPDATE t SET a = 1 WHERE x ILIKE '%%'"),
        ("DELETE FROM t WHERE x ~ 'abc'", "DELETE FROM t WHERE x ~ '.*'"),
        ("DELETE FROM t WHERE x = 1 OR 1 = 2", "DELETE FROM t WHERE x = 1 OR 1 = 1"),
        ("DELETE FROM t WHERE a + 1 = a + 2", "DELETE FROM t WHERE a + 1 = a + 1"),
        (
            "MERGE INTO t USING s ON t.id = s.id OR 1 = 2 WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING s ON t.id = s.id OR 1 = 1 WHEN MATCHED THEN DELETE",
        ),
    ],
)
def test_constants_that_decide_without_where_are_not_reused_from_the_cache(
    first: str, second: str
) -> None:
    s = _session([])
    assert _one(s, first).verdict is Verdict.ALLOW
    d = _one(s, second)
    assert (d.verdict, d.rule) == (Verdict.REVIEW, "baseline/review-without-where")


def test_plain_keyed_writes_stay_in_the_normalized_cache() -> None:
    from wardgate.policy.classify import classify_message

    for sql in (
        "UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 7",
        "DELETE FROM t WHERE id = 5 AND b > 3",
        "UPDATE t SET a = 1 WHERE id = $1",
    ):
        assert not classify_message(sql)[0][1].constant_sensitive, sql


def test_upserts_and_rewriting_alters_are_updates() -> None:
    from wardgate.policy.classify import classify_sql

    f = classify_sql(
        "INSERT INTO pay (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET nick = pay.ssn"
    )
    assert {"insert", "update"} <= f.kinds and ("pay", "nick") in f.columns
    assert ("pay", "ssn") in f.copied
    f = classify_sql("INSERT INTO pay VALUES (1) ON CONFLICT (id) DO UPDATE SET ssn = excluded.ssn")
    assert not f.copied  # the inserted row's own value
    assert "update" not in classify_sql("INSERT INTO pay VALUES (1) ON CONFLICT DO NOTHING").kinds
    f = classify_sql("ALTER TABLE pay ALTER COLUMN nick TYPE text USING ssn")
    assert "update" in f.kinds and f.without_where and ("pay", "ssn") in f.copied
    for sql in (
        "ALTER TABLE pay ALTER COLUMN salary TYPE int USING salary::text::int",
        "ALTER TABLE pay ALTER COLUMN salary TYPE int",
    ):
        f = classify_sql(sql)
        assert "update" not in f.kinds and not f.without_where
        assert ("pay", "salary") in f.columns


@pytest.mark.parametrize(
    ("sql", "held"),
    [
        ("DELETE FROM t WHERE t.x = x", True),
        ("DELETE FROM t WHERE x = public.t.x", True),
        ("UPDATE t AS a SET y = 1 WHERE a.x = x", True),
        ("DELETE FROM t USING u WHERE t.id = u.id", False),
        ("DELETE FROM t WHERE t.x = u.x", False),
    ],
)
def test_the_target_tables_own_column_under_another_name(sql: str, held: bool) -> None:
    d = _one(_session([]), sql)
    assert (d.verdict is Verdict.REVIEW) is held


def test_merge_actions_are_their_kinds_and_copies_resolve_aliases() -> None:
    from wardgate.policy.classify import classify_sql

    f = classify_sql(
        "MERGE INTO pay p USING src s ON p.id = s.id WHEN MATCHED THEN UPDATE SET nick = s.x "
        "WHEN MATCHED AND false THEN DELETE WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, y)"
    )
    assert {"merge", "update", "delete", "insert"} <= f.kinds
    assert {("pay", "nick"), ("pay", "id"), ("pay", "v")} <= f.columns
    assert {("src", "x"), ("src", "id"), (None, "y")} <= f.copied
    f = classify_sql("UPDATE t SET nick = x.ssn FROM pay AS x WHERE t.id = x.id")
    assert ("pay", "ssn") in f.copied
