"""Property: comments between tokens and the case of keywords/unquoted names never change a verdict.

Tokens come from PostgreSQL's own scanner (pglast.parser.scan), so the rewritten
statement is the same statement to PostgreSQL; the policy must agree.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast.parser import scan

from tests.corpus.load import load_cases
from wardgate.pipeline.command import SessionInfo
from wardgate.policy import PolicyEngine

_RANK = {"allow": 0, "review": 1, "deny": 2}
_CASES = [
    c for c in load_cases() if not c.setup and c.sql.isascii() and c.category != "unparseable"
]
_ENGINE = PolicyEngine([])
_COMMENTS = ["/**/", "/* ; */", "-- x;\n", "/* /* nested */ */", "\n\t"]


def _verdict(sql: str, via: str) -> str:
    session = _ENGINE.session(SessionInfo("s", "ci", (), "prod", "postgres", "x"))
    results = session.evaluate(sql, via=via)
    return max((d.verdict.value for _, d in results), key=_RANK.__getitem__, default="allow")


def _rewrite(sql: str, inserts: list[tuple[int, int]], swap: bool) -> str:
    tokens = list(scan(sql))
    out, pos = [], 0
    where = {i % (len(tokens) + 1): c for i, c in inserts}
    for i, tok in enumerate(tokens):
        out.append(sql[pos : tok.start])
        if i in where:
            out.append(" " + _COMMENTS[where[i] % len(_COMMENTS)] + " ")
        text = sql[tok.start : tok.end + 1]
        unquoted_name = tok.name == "IDENT" and text[:1] not in ('"', "U", "u")
        if swap and (tok.kind != "NO_KEYWORD" or unquoted_name):
            text = text.swapcase()
        out.append(text)
        pos = tok.end + 1
    out.append(sql[pos:])
    if len(tokens) in where:
        out.append(" /* tail */")
    return "".join(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(_CASES) - 1),
    inserts=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 10)), max_size=6),
    swap=st.booleans(),
)
def test_comments_and_case_do_not_change_the_verdict(index, inserts, swap) -> None:
    case = _CASES[index]
    rewritten = _rewrite(case.sql, inserts, swap)
    assert _verdict(rewritten, case.via) == case.expect, rewritten


def test_rewrite_really_changes_text() -> None:
    sql = "DROP TABLE customers"
    assert _rewrite(sql, [(0, 0), (1, 2)], True) != sql
    assert _verdict(_rewrite(sql, [(0, 0), (1, 2)], True), "simple") == "deny"
