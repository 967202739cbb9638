"""Recognise `SET wardgate.<name> = '...'`, which the gateway consumes itself.

Theory of operation: the agent passes a justification for reviewers with
`SET wardgate.reason = '...'`. The statement is recognised from its parse tree, so any
case, quoting, comments or `SET SESSION`/`SET LOCAL`/`TO` spelling works and a
statement that merely contains the text does not. `RESET wardgate.reason` gives an
empty value (clears it).
"""

from __future__ import annotations

import json

from pglast.parser import ParseError, parse_sql_json

__all__ = ["wardgate_setting"]

_PREFIX = "wardgate."


def _value(arg: dict) -> str | None:
    const = arg.get("A_Const")
    if const is not None:
        for key in ("sval", "ival", "fval", "boolval"):
            if key in const:
                inner = const[key]
                value = inner.get(key) if isinstance(inner, dict) else inner
                if key == "boolval":
                    return "true" if value else "false"
                return "" if value is None else str(value)
        return None
    if "String" in arg:
        return arg["String"].get("sval", "")
    return None


def wardgate_setting(text: str) -> tuple[str, str] | None:
    """("reason", value) for `SET wardgate.reason = value`; None for anything else."""
    if "wardgate" not in text.lower() and "\\" not in text and "u&" not in text.lower():
        return None
    try:
        tree = json.loads(parse_sql_json(text))
    except (ParseError, ValueError, RecursionError):
        return None
    stmts = tree.get("stmts", [])
    if len(stmts) != 1:
        return None
    stmt = stmts[0].get("stmt", {}).get("VariableSetStmt")
    if stmt is None:
        return None
    name = (stmt.get("name") or "").lower()
    if not name.startswith(_PREFIX) or len(name) == len(_PREFIX):
        return None
    key = name[len(_PREFIX) :]
    kind = stmt.get("kind")
    if kind in ("VAR_RESET", "VAR_SET_DEFAULT"):
        return key, ""
    if kind != "VAR_SET_VALUE":
        return None
    values = [_value(a) for a in stmt.get("args", [])]
    if any(v is None for v in values):
        return None
    return key, ", ".join(v for v in values if v is not None)
