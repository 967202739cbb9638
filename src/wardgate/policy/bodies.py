"""Analyse the bodies of DO blocks and CREATE FUNCTION / PROCEDURE statements.

Theory of operation: a body is code that runs later, so its statements are classified
now and folded into the creating statement's facts. SQL bodies are parsed with the SQL
parser. PL/pgSQL bodies are compiled with pglast's PL/pgSQL parser (the real plpgsql
compiler front end); its JSON is walked for every `PLpgSQL_expr` (embedded SQL
statements, PERFORM, conditions, assignments, defaults, cursor queries), each parsed and
classified. Dynamic SQL (`EXECUTE`, `FOR ... IN EXECUTE`, `RETURN QUERY EXECUTE`,
`OPEN ... FOR EXECUTE`) is classified when its query is a plain string literal and
otherwise reported as `dynamic_sql`. Anything that cannot be analysed (another language,
a body that does not compile) is reported as `unanalysable_body`; the baseline sends both
to review. Functions in `internal` language are aliases of built-in C functions: the
symbol is checked against the dangerous built-ins.
"""

from __future__ import annotations

import json
from typing import Any

import pglast
from pglast.parser import ParseError, parse_plpgsql_json, scan

from wardgate.policy.facts import FILE_FUNCTIONS, LARGE_OBJECT_FILE_FUNCTIONS, StatementFacts

__all__ = ["analyse_do", "analyse_function", "analyse_plpgsql_source"]

_DYNAMIC_STMTS = {
    "PLpgSQL_stmt_dynexecute": "query",
    "PLpgSQL_stmt_dynfors": "query",
    "PLpgSQL_stmt_return_query": "dynquery",
    "PLpgSQL_stmt_open": "dynquery",
}


def _dollar_quote(body: str) -> str:
    tag = "$wg$"
    n = 0
    while tag in body:
        n += 1
        tag = f"$wg{n}$"
    return f"{tag}{body}{tag}"


def analyse_do(language: str, source: str) -> StatementFacts:
    """Facts of a DO block's body."""
    if language != "plpgsql":
        facts = StatementFacts()
        facts.add_feature("unanalysable_body", f"DO block in language {language}")
        return facts
    return analyse_plpgsql_source(f"DO {_dollar_quote(source)}", "DO block")


def analyse_function(language: str, source: str | None, create_text: str) -> StatementFacts:
    """Facts of a CREATE FUNCTION / PROCEDURE body given as a string."""
    from wardgate.policy.classify import classify_sql

    facts = StatementFacts()
    if source is None:
        facts.add_feature("unanalysable_body", "function without a body")
        return facts
    if language == "sql":
        try:
            return classify_sql(source)
        except (ParseError, RecursionError) as exc:
            facts.add_feature("unanalysable_body", f"SQL function body does not parse: {exc}")
            return facts
    if language == "plpgsql":
        return analyse_plpgsql_source(create_text, "function body")
    if language == "internal":
        symbol = source.strip()
        facts.add_feature("native_function", f"internal-language function aliases {symbol}")
        base = symbol.split("_off")[0].split("_all")[0]
        for name in FILE_FUNCTIONS | LARGE_OBJECT_FILE_FUNCTIONS:
            if symbol == name or base == name or symbol.startswith(name):
                feature = "file_access" if name in FILE_FUNCTIONS else "large_object_file"
                facts.add_feature(feature, f"internal function aliases {symbol}")
        if "dblink" in symbol:
            facts.add_feature("dblink", f"internal function aliases {symbol}")
        facts.add_feature("unanalysable_body", f"internal-language function {symbol}")
        return facts
    if language == "c":
        facts.add_feature("native_function", "C-language function")
    facts.add_feature("unanalysable_body", f"function body in language {language}")
    return facts


def analyse_plpgsql_source(source: str, what: str) -> StatementFacts:
    """Compile a DO or CREATE FUNCTION statement with the PL/pgSQL parser and classify it."""
    facts = StatementFacts()
    try:
        tree = json.loads(parse_plpgsql_json(source))
    except (ParseError, RecursionError, ValueError) as exc:
        facts.add_feature("unanalysable_body", f"PL/pgSQL {what} cannot be analysed: {exc}")
        return facts
    _walk_plpgsql(tree, facts, what)
    return facts


def _expr_query(node: Any) -> tuple[str, int] | None:
    if isinstance(node, dict) and "PLpgSQL_expr" in node:
        expr = node["PLpgSQL_expr"]
        return expr.get("query", ""), int(expr.get("parseMode", 0))
    return None


def _string_literal(expression: str) -> str | None:
    """The value of an expression that is a single string literal, else None."""
    try:
        stmts = pglast.parse_sql(f"SELECT {expression}")
    except ParseError:
        return None
    if len(stmts) != 1:
        return None
    targets = stmts[0].stmt.targetList or ()
    if len(targets) != 1:
        return None
    val = targets[0].val
    if type(val).__name__ == "A_Const" and type(val.val).__name__ == "String":
        return val.val.sval
    return None


_OPEN, _CLOSE = frozenset({"ASCII_40", "ASCII_91"}), frozenset({"ASCII_41", "ASCII_93"})


def _assignment_sql(query: str) -> str | None:
    """`target := expression` as one SELECT of what runs: the expression and, when the
    target has subscripts (`a[f(x)] := ...`), the target too. The `:=` is found with
    PostgreSQL's scanner, outside quotes, comments and brackets: in
    `a[length(':=')] := pg_read_file(...) /* ' */ || ''` the first `:=` in the text is
    inside a string."""
    try:
        tokens = scan(query)
    except Exception:  # noqa: BLE001 - pglast raises its own errors for what it cannot scan
        return None
    depth = 0
    subscripted = False
    for t in tokens:
        if t.name in _OPEN:
            depth += 1
            subscripted |= t.name == "ASCII_91"
        elif t.name in _CLOSE:
            depth -= 1
        elif depth == 0 and t.name in ("COLON_EQUALS", "ASCII_61"):
            # token offsets are character offsets into the text, end inclusive
            rhs = query[t.end + 1 :]
            return f"SELECT {query[: t.start]}, {rhs}" if subscripted else f"SELECT {rhs}"
    return None


def _classify_expr(query: str, mode: int, facts: StatementFacts, what: str) -> None:
    from wardgate.policy.classify import classify_sql

    if mode == 0:
        sql = query
    elif mode == 2:
        sql = f"SELECT {query}"
    else:  # assignment: "target := expression" (or "target = expression")
        sql = _assignment_sql(query)
        if sql is None:
            facts.add_feature(
                "unanalysable_body", f"{what}: cannot find the assignment in {query[:60]!r}"
            )
            return
    try:
        facts.merge(classify_sql(sql))
    except (ParseError, RecursionError) as exc:
        facts.add_feature("unanalysable_body", f"{what}: cannot analyse {query[:60]!r}: {exc}")


def _walk_plpgsql(node: Any, facts: StatementFacts, what: str) -> None:
    if isinstance(node, list):
        for item in node:
            _walk_plpgsql(item, facts, what)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in _DYNAMIC_STMTS and isinstance(value, dict):
            field = _DYNAMIC_STMTS[key]
            expr = _expr_query(value.get(field))
            if expr is not None:
                literal = _string_literal(expr[0])
                if literal is None:
                    facts.add_feature(
                        "dynamic_sql", f"{what} runs dynamic SQL: EXECUTE {expr[0][:80]}"
                    )
                else:
                    _classify_expr(literal, 0, facts, what)
            rest = {k: v for k, v in value.items() if k != field}
            _walk_plpgsql(rest, facts, what)
            continue
        expr = _expr_query({key: value}) if key == "PLpgSQL_expr" else None
        if expr is not None:
            _classify_expr(expr[0], expr[1], facts, what)
            continue
        if isinstance(value, dict | list):
            _walk_plpgsql(value, facts, what)
