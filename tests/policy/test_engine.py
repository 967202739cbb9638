"""PolicyEngine / PolicySession: rule features, combination, validation, caching."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from wardgate.pipeline.command import SessionInfo, Verdict
from wardgate.policy import PolicyConfigError, PolicyEngine, PolicySpec, wardgate_setting


def info(identity="ci-bot", groups=("ci",), connection="prod", protocol="postgres"):
    return SessionInfo("s1", identity, tuple(groups), connection, protocol, "127.0.0.1")


def policy(name="p", rules=(), **kw) -> PolicySpec:
    return PolicySpec.model_validate({"name": name, "rules": list(rules), **kw})


def engine(*policies, names=None, **kw) -> PolicyEngine:
    names = names or [p.name for p in policies]
    return PolicyEngine(list(policies), connection_policies={"prod": names}, **kw)


def one(session, sql, **kw):
    ((_, decision),) = session.evaluate(sql, **kw)
    return decision


def test_no_rule_matches_allows_under_default() -> None:
    s = engine(policy()).session(info())
    d = one(s, "SELECT 1")
    assert d.verdict is Verdict.ALLOW and d.rule == "<default>"
    assert d.facts["kinds"] == ["select"] and "fingerprint" in d.facts


def test_most_restrictive_wins_and_first_rule_names_it() -> None:
    p = policy(
        rules=[
            {"name": "allow-all", "verdict": "allow"},
            {"name": "review-writes", "verdict": "review", "writes": True},
            {"name": "deny-orders", "verdict": "deny", "objects": {"tables": ["orders"]}},
            {"name": "deny-orders-2", "verdict": "deny", "objects": {"tables": ["ord*"]}},
        ]
    )
    s = engine(p).session(info())
    assert one(s, "SELECT 1").rule == "p/allow-all"
    d = one(s, "INSERT INTO t VALUES (1)")
    assert (d.verdict, d.rule) == (Verdict.REVIEW, "p/review-writes")
    d = one(s, "INSERT INTO orders VALUES (1)")
    assert (d.verdict, d.rule) == (Verdict.DENY, "p/deny-orders")
    assert d.facts["matched"] == [
        "p/allow-all",
        "p/review-writes",
        "p/deny-orders",
        "p/deny-orders-2",
    ]


def test_session_conditions() -> None:
    p = policy(
        rules=[
            {"name": "bots", "verdict": "deny", "identities": ["*-bot"], "kinds": ["delete"]},
            {"name": "ops", "verdict": "review", "groups": ["ops"], "kinds": ["update"]},
            {"name": "conn", "verdict": "deny", "connections": ["prod"], "kinds": ["insert"]},
            {"name": "proto", "verdict": "deny", "protocols": ["mysql"], "kinds": ["select"]},
        ]
    )
    e = engine(p)
    bot, human = e.session(info()), e.session(info(identity="alice", groups=("ops",)))
    assert one(bot, "DELETE FROM t WHERE id = 1").verdict is Verdict.DENY
    assert one(human, "DELETE FROM t WHERE id = 1").verdict is Verdict.ALLOW
    assert one(bot, "UPDATE t SET a = 1 WHERE id = 1").verdict is Verdict.ALLOW
    assert one(human, "UPDATE t SET a = 1 WHERE id = 1").verdict is Verdict.REVIEW
    assert one(bot, "INSERT INTO t VALUES (1)").verdict is Verdict.DENY
    assert one(bot, "SELECT 1").verdict is Verdict.ALLOW


def test_objects_columns_functions_schemas() -> None:
    p = policy(
        rules=[
            {"name": "ssn", "verdict": "deny", "objects": {"columns": ["customers.ssn"]}},
            {"name": "billing", "verdict": "review", "objects": {"schemas": ["billing"]}},
            {"name": "fn", "verdict": "deny", "objects": {"functions": ["pg_catalog.now"]}},
        ]
    )
    s = engine(p).session(info())
    assert one(s, "SELECT ssn FROM customers").verdict is Verdict.DENY
    assert one(s, "SELECT c.ssn FROM customers c").verdict is Verdict.DENY
    assert one(s, "SELECT * FROM customers").verdict is Verdict.DENY  # star includes ssn
    assert one(s, "SELECT name FROM customers").verdict is Verdict.ALLOW
    assert one(s, "SELECT ssn FROM employees").verdict is Verdict.ALLOW
    assert one(s, "SELECT * FROM billing.invoices").verdict is Verdict.REVIEW
    assert one(s, "SELECT * FROM invoices").verdict is Verdict.ALLOW
    assert one(s, "SELECT now()").verdict is Verdict.DENY
    assert one(s, "SELECT myschema.now()").verdict is Verdict.ALLOW


def test_search_path_change_widens_unqualified_names() -> None:
    p = policy(rules=[{"name": "b", "verdict": "deny", "objects": {"tables": ["billing.*"]}}])
    s = engine(p).session(info())
    assert one(s, "SELECT * FROM invoices").verdict is Verdict.ALLOW
    assert one(s, "SELECT * FROM billing.invoices").verdict is Verdict.DENY
    one(s, "SET search_path = billing")
    assert one(s, "SELECT * FROM invoices").verdict is Verdict.DENY


def test_properties_and_text_regex() -> None:
    p = policy(
        rules=[
            {"name": "ww", "verdict": "review", "without_where": True},
            {"name": "rx", "verdict": "deny", "text_regex": "(?i)ticket-0"},
            {"name": "ro", "verdict": "allow", "reads": True, "writes": False},
        ]
    )
    s = engine(p).session(info())
    assert one(s, "UPDATE t SET a = 1").rule == "p/ww"
    assert one(s, "SELECT 1 /* TICKET-0 */").rule == "p/rx"
    assert one(s, "SELECT 1").rule == "p/ro"
    assert not one(s, "SELECT 1").cacheable  # a text rule applies


def test_time_windows() -> None:
    now = [datetime(2026, 11, 23, 10, 0, tzinfo=UTC)]  # a Monday
    window = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}
    p = policy(
        rules=[
            {
                "name": "off-hours",
                "verdict": "review",
                "writes": True,
                "outside_time_windows": [window],
            },
            {
                "name": "night",
                "verdict": "deny",
                "kinds": ["delete"],
                "time_windows": [{"start": "22:00", "end": "06:00"}],
            },
        ]
    )
    s = engine(p, clock=lambda: now[0]).session(info())
    assert one(s, "INSERT INTO t VALUES (1)").verdict is Verdict.ALLOW
    now[0] = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)  # Saturday
    assert one(s, "INSERT INTO t VALUES (1)").verdict is Verdict.REVIEW
    now[0] = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)
    assert one(s, "DELETE FROM t WHERE id = 1").verdict is Verdict.DENY
    now[0] = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert one(s, "DELETE FROM t WHERE id = 1").verdict is Verdict.ALLOW


def test_unless_exception() -> None:
    p = policy(
        name="prod",
        include=["baseline"],
        rules=[
            {"name": "migrations-may-drop", "verdict": "allow", "kinds": ["drop_table"]},
            {
                "name": "drop-needs-review",
                "verdict": "review",
                "kinds": ["drop_index"],
                "unless": {"identities": ["migrator"]},
            },
        ],
    )
    e = engine(p)
    # most restrictive: an allow rule cannot override the included baseline's deny
    assert one(e.session(info()), "DROP TABLE t").verdict is Verdict.DENY
    assert one(e.session(info()), "DROP INDEX i").verdict is Verdict.REVIEW
    assert one(e.session(info(identity="migrator")), "DROP INDEX i").verdict is Verdict.ALLOW


def test_policy_default_allow_list() -> None:
    p = policy(
        name="readonly",
        default="deny",
        rules=[{"name": "reads", "verdict": "allow", "kinds": ["select", "show"]}],
    )
    s = engine(p).session(info())
    assert one(s, "SELECT 1").verdict is Verdict.ALLOW
    d = one(s, "INSERT INTO t VALUES (1)")
    assert (d.verdict, d.rule) == (Verdict.DENY, "readonly/<default>")


def test_review_settings_and_masks() -> None:
    p = policy(
        rules=[
            {
                "name": "r1",
                "verdict": "review",
                "kinds": ["delete"],
                "review": {"ttl": "90s", "approvals": 1},
            },
            {
                "name": "r2",
                "verdict": "review",
                "kinds": ["delete"],
                "review": {"ttl": "1h", "approvals": 2},
            },
            {"name": "m1", "verdict": "mask", "mask": {"entities": ["EMAIL"]}},
            {
                "name": "m2",
                "verdict": "mask",
                "objects": {"tables": ["customers"]},
                "mask": {"columns": ["customers.ssn"], "strategy": "hash"},
            },
        ]
    )
    s = engine(p).session(info())
    d = one(s, "DELETE FROM t WHERE id = 1")
    assert d.rule == "p/r1" and d.review_ttl_seconds == 90 and d.approvals_required == 2
    d = one(s, "SELECT * FROM customers")
    assert d.verdict is Verdict.ALLOW and d.rule == "p/m1"
    assert [(m.rule, m.entities, m.columns, m.strategy) for m in d.masks] == [
        ("p/m1", ("EMAIL",), (), "redact"),
        ("p/m2", (), ("customers.ssn",), "hash"),
    ]


def test_message_verdicts_are_per_statement() -> None:
    s = PolicyEngine([]).session(info())
    out = s.evaluate("SELECT 1; DELETE FROM t; DROP TABLE t")
    assert [(c.index, d.verdict) for c, d in out] == [
        (0, Verdict.ALLOW),
        (1, Verdict.REVIEW),
        (2, Verdict.DENY),
    ]
    assert [c.text for c, _ in out] == ["SELECT 1", "DELETE FROM t", "DROP TABLE t"]


def test_unparsed_deny_or_review() -> None:
    e = PolicyEngine([], on_unparsed={"lab": "review"})
    d = one(e.session(info()), "SELEC 1")
    assert d.verdict is Verdict.DENY and d.rule == "builtin/unparsed"
    assert "syntax error" in d.reason
    d = one(e.session(info(connection="lab")), "SELEC 1")
    assert (
        d.verdict is Verdict.REVIEW and d.review_ttl_seconds is None
    )  # approvals.default_ttl applies


def test_prepare_execute_and_session_functions() -> None:
    s = PolicyEngine([]).session(info())
    assert one(s, "PREPARE a AS SELECT 1").verdict is Verdict.ALLOW
    assert one(s, "EXECUTE a").verdict is Verdict.ALLOW
    assert one(s, "EXECUTE b").rule == "builtin/unknown-prepared-statement"
    one(s, "PREPARE b AS DELETE FROM t")
    assert one(s, "EXECUTE b").verdict is Verdict.REVIEW
    one(s, "DEALLOCATE ALL")
    assert one(s, "EXECUTE a").verdict is Verdict.DENY
    assert one(s, "SELECT wipe()").verdict is Verdict.ALLOW
    one(s, "CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM t'")
    d = one(s, "SELECT wipe()")
    assert d.verdict is Verdict.REVIEW and "session_function" in d.facts["features"]
    # another session does not know the function
    assert one(PolicyEngine([]).session(info()), "SELECT wipe()").verdict is Verdict.ALLOW


def test_caches_never_mix_structures() -> None:
    p = policy(rules=[{"name": "b", "verdict": "deny", "objects": {"tables": ["billing.*"]}}])
    e = engine(p, names=["p", "baseline"])
    s = e.session(info())
    assert one(s, "SELECT * FROM billing.t WHERE id = 1").verdict is Verdict.DENY
    # same fingerprint as above (pglast ignores schema names), different decision
    assert one(s, "SELECT * FROM t WHERE id = 1").verdict is Verdict.ALLOW
    assert one(s, "SELECT * FROM billing.t WHERE id = 2").verdict is Verdict.DENY
    assert one(s, "DELETE FROM t WHERE 1 = 2").verdict is Verdict.ALLOW
    assert one(s, "DELETE FROM t WHERE 1 = 1").verdict is Verdict.REVIEW
    assert one(s, "SELECT set_config('application_name', 'x', false)").verdict is Verdict.ALLOW
    assert one(s, "SELECT set_config('role', 'x', false)").verdict is Verdict.DENY
    assert one(s, 'SELECT * FROM "T" WHERE id = 1').verdict is Verdict.ALLOW
    before = dict(e.stats)
    one(s, "SELECT * FROM t WHERE id = 99")
    assert e.stats["normalized_hits"] == before["normalized_hits"] + 1
    one(s, "SELECT * FROM t WHERE id = 99")
    assert e.stats["text_hits"] == before["text_hits"] + 1
    assert one(s, "SELECT * FROM t WHERE id = 5").cacheable


def test_config_validation_errors() -> None:
    with pytest.raises(PolicyConfigError, match="unknown policy 'nope'"):
        PolicyEngine([], connection_policies={"prod": ["nope"]})
    with pytest.raises(PolicyConfigError, match="built in"):
        PolicyEngine([policy(name="baseline")])
    with pytest.raises(PolicyConfigError, match="cycle"):
        PolicyEngine([policy(name="a", include=["b"]), policy(name="b", include=["a"])])
    with pytest.raises(PolicyConfigError, match="on_unparsed"):
        PolicyEngine([], on_unparsed={"prod": "allow"})
    with pytest.raises(ValidationError, match="unknown feature"):
        policy(rules=[{"name": "x", "verdict": "deny", "features": ["nope"]}])
    with pytest.raises(ValidationError, match="text_regex"):
        policy(rules=[{"name": "x", "verdict": "deny", "text_regex": "("}])
    with pytest.raises(ValidationError, match="duration"):
        policy(rules=[{"name": "x", "verdict": "review", "review": {"ttl": "soon"}}])
    with pytest.raises(ValidationError, match="mask"):
        policy(rules=[{"name": "x", "verdict": "mask"}])
    with pytest.raises(ValidationError, match="duplicate"):
        policy(rules=[{"name": "x", "verdict": "deny"}, {"name": "x", "verdict": "allow"}])
    with pytest.raises(ValidationError):
        policy(rules=[{"name": "x", "verdict": "deny", "kindz": ["select"]}])


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SET wardgate.reason = 'ticket 1'", ("reason", "ticket 1")),
        ("set WARDGATE.REASON to 'x'", ("reason", "x")),
        ('/* c */ SET SESSION "wardgate".reason = $$it\'s fine$$ -- c', ("reason", "it's fine")),
        ("SET LOCAL wardgate.reason = 42", ("reason", "42")),
        ("RESET wardgate.reason", ("reason", "")),
        ("SET application_name = 'wardgate.reason'", None),
        ("SELECT 'SET wardgate.reason = 1'", None),
        ("SET wardgate.reason = 'a'; DROP TABLE t", None),
        ("SET wardgate.reason =", None),
    ],
)
def test_wardgate_setting(sql: str, expected) -> None:
    assert wardgate_setting(sql) == expected


def test_documented_analytics_example() -> None:
    import yaml

    doc = yaml.safe_load(
        """
- name: analytics
  include: [baseline]
  default: deny
  rules:
    - {name: reads, verdict: allow, kinds: [select, show, set, transaction, explain]}
    - name: pii
      verdict: review
      reason: reads PII
      objects: {columns: ["customers.ssn", "*.card_number"]}
      review: {ttl: 30m, approvals: 2}
    - name: mask-email
      verdict: mask
      objects: {tables: [customers]}
      mask: {columns: [customers.email], strategy: partial}
"""
    )
    e = PolicyEngine(
        [PolicySpec.model_validate(p) for p in doc], connection_policies={"prod": ["analytics"]}
    )
    s = e.session(info())
    d = one(s, "SELECT name FROM customers")
    assert (d.verdict, d.rule) == (Verdict.ALLOW, "analytics/reads")
    assert [m.rule for m in d.masks] == ["analytics/mask-email"]
    d = one(s, "SELECT * FROM customers")
    assert (d.verdict, d.rule, d.approvals_required) == (Verdict.REVIEW, "analytics/pii", 2)
    assert d.review_ttl_seconds == 1800
    d = one(s, "INSERT INTO customers (name) VALUES ('x')")
    assert (d.verdict, d.rule) == (Verdict.DENY, "analytics/<default>")
    assert one(s, "DROP TABLE customers").rule == "baseline/deny-drop-table"


def test_pathological_input_fails_closed() -> None:
    s = PolicyEngine([]).session(info())
    deep = "SELECT " + " + ".join(["pg_read_file('x')"] * 3000)
    assert one(s, deep).verdict is Verdict.DENY
    long = "SELECT 1 /*" + "x" * 20000 + "*/; DROP TABLE t"
    assert [d.verdict for _, d in s.evaluate(long)] == [Verdict.ALLOW, Verdict.DENY]
    assert s.evaluate("") == [] and s.evaluate("  ;  -- nothing") == []


def test_fetch_reads_what_its_cursor_was_declared_with() -> None:
    """FETCH names only the cursor: it is decided (and its rows masked) as reading what
    the DECLARE read; a cursor the session did not declare may read any column; cursors
    without HOLD end with the transaction, CLOSE ends one or all."""
    s = PolicyEngine([]).session(info())
    one(s, "DECLARE c CURSOR FOR SELECT salary FROM pay")
    one(s, "DECLARE h CURSOR WITH HOLD FOR SELECT ssn FROM people")
    assert "column:pay.salary" in one(s, "FETCH 10 FROM c").facts["objects"]
    assert "column:pay.salary" in one(s, "MOVE c").facts["objects"]
    unknown = one(s, "FETCH ALL FROM other")
    assert "column:*" in unknown.facts["objects"] and "unknown_cursor" in unknown.facts["features"]
    one(s, "COMMIT")
    assert "column:*" in one(s, "FETCH c").facts["objects"]
    assert "column:people.ssn" in one(s, "FETCH h").facts["objects"]
    one(s, "CLOSE ALL")
    assert "column:*" in one(s, "FETCH h").facts["objects"]
    d = one(s, "DECLARE c CURSOR FOR SELECT 1")
    assert d.facts["declares"] == "c" and one(s, "CLOSE c").facts["closes_cursor"] == "c"
