"""Helpers for pglast's JSON parse trees: strings, names and constant folding.

Theory of operation: the classifier works on the JSON form of the parse tree (it is
several times faster to build than pglast's node objects). These helpers read string
and name nodes, and decide whether a WHERE condition is constant (`where_truth`): a
condition that references no column selects every row or none, so it is folded here
where it can be (`1=1`, `'a'='a'`, `NOT false`, `'yes'::boolean`, `NULL IS NULL`) and
otherwise assumed possibly true.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "sval",
    "name_list",
    "contains",
    "const_value",
    "as_bool",
    "where_truth",
    "UNKNOWN",
    "literal_text",
    "qualified_name",
]

_TRUE_STRINGS = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_STRINGS = frozenset({"f", "false", "n", "no", "off", "0"})


def sval(node: Any) -> str | None:
    """The string of a `{"String": {"sval": ...}}` node or of a string A_Const."""
    if isinstance(node, dict):
        if "String" in node:
            return node["String"].get("sval", "")
        const = node.get("A_Const")
        if const is not None and "sval" in const:
            return const["sval"].get("sval", "")
    return None


def name_list(items: list[Any]) -> list[str]:
    return [s for s in (sval(i) for i in items) if s is not None]


def contains(node: Any, types: frozenset[str]) -> bool:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in types:
                return True
            if isinstance(value, dict | list) and contains(value, types):
                return True
    elif isinstance(node, list):
        return any(contains(v, types) for v in node)
    return False


_NON_CONSTANT = frozenset({"ColumnRef", "CurrentOfExpr"})
_CONSTANT = frozenset({"A_Const"})


def const_value(node: dict[str, Any]) -> Any:
    """A Python value for a literal (through casts), or UNKNOWN."""
    if "TypeCast" in node:
        inner = const_value(node["TypeCast"].get("arg", {}))
        names = name_list(node["TypeCast"].get("typeName", {}).get("names", []))
        if names and names[-1] in ("bool", "boolean"):
            return as_bool(inner)
        return inner
    const = node.get("A_Const")
    if const is None:
        return UNKNOWN
    if const.get("isnull"):
        return None
    if "boolval" in const:
        return bool(const["boolval"].get("boolval", False))
    if "ival" in const:
        return const["ival"].get("ival", 0)
    if "fval" in const:
        try:
            return float(const["fval"].get("fval", "0"))
        except ValueError:
            return UNKNOWN
    if "sval" in const:
        return const["sval"].get("sval", "")
    return UNKNOWN


class _Unknown:
    pass


UNKNOWN = _Unknown()


def as_bool(value: Any) -> Any:
    if value is None or isinstance(value, bool | _Unknown):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE_STRINGS:
            return True
        if low in _FALSE_STRINGS:
            return False
    return UNKNOWN


_OPS = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


# Expressions made only of these are stable: `x = x` over them holds on every row
# where x is not NULL (`random() = random()` does not, so calls are not among them).
_STABLE_NODES = frozenset({"ColumnRef", "A_Const", "TypeCast", "A_Expr", "String", "TypeName"})
_REFLEXIVE_OPS = frozenset({"=", "<=", ">="})
_MATCH_ALL_LIKE = re.compile(r"%+")
_MATCH_ALL_REGEX = frozenset({"", ".*", "^", "^.*", ".*$", "^.*$"})


def _own_column(ref: dict[str, Any], target: frozenset[str]) -> dict[str, Any]:
    """`t.x` as `x` when t is the statement's target table (`t.x = x` is `x = x`)."""
    fields = ref.get("fields", [])
    if len(fields) > 1 and sval(fields[-2]) in target:
        return {"fields": fields[-1:]}
    return ref


def _without_locations(node: Any, target: frozenset[str] = frozenset()) -> Any:
    if isinstance(node, dict):
        if target and isinstance(node.get("ColumnRef"), dict):
            node = {"ColumnRef": _own_column(node["ColumnRef"], target)}
        return {k: _without_locations(v, target) for k, v in node.items() if k != "location"}
    if isinstance(node, list):
        return [_without_locations(v, target) for v in node]
    return node


def _shape(node: Any, target: frozenset[str] = frozenset()) -> Any:
    """`node` without locations and with every constant's value erased."""
    if isinstance(node, dict):
        if "A_Const" in node:
            return "A_Const"
        if target and isinstance(node.get("ColumnRef"), dict):
            node = {"ColumnRef": _own_column(node["ColumnRef"], target)}
        return {k: _shape(v, target) for k, v in node.items() if k != "location"}
    if isinstance(node, list):
        return [_shape(v, target) for v in node]
    return node


def _stable(node: Any) -> bool:
    if isinstance(node, dict):
        return all(
            (k in _STABLE_NODES or not k[:1].isupper()) and _stable(v) for k, v in node.items()
        )
    if isinstance(node, list):
        return all(_stable(v) for v in node)
    return True


def _tautology(
    node: dict[str, Any], consulted: list[bool], target: frozenset[str] = frozenset()
) -> bool:
    """A condition over columns that holds for (nearly) every row: `id = id`, `name LIKE '%'`.

    Each is true on every row where the column is not NULL, so an UPDATE or DELETE
    with it is as broad as one without a WHERE clause. `consulted` gets True when the
    answer depended on a constant's value (`LIKE 'a%'` is not one, `LIKE '%'` is; `a + 1
    = a + 2` is not, `a + 1 = a + 1` is): the statement's facts then cannot be reused
    for another that differs from it in constants only.
    """
    test = node.get("NullTest")
    if isinstance(test, dict) and test.get("nulltesttype") == "IS_NOT_NULL":
        # `x IS NOT NULL`: every row where x is set, as `x = x`
        arg = test.get("arg")
        return contains(arg, _NON_CONSTANT) and _stable(arg)
    expr = node.get("A_Expr")
    if not isinstance(expr, dict):
        return False
    kind = expr.get("kind")
    op = name_list(expr.get("name", []))
    lexpr, rexpr = expr.get("lexpr"), expr.get("rexpr")
    if not contains(lexpr, _NON_CONSTANT):
        return False
    if kind == "AEXPR_NOT_DISTINCT" or (kind == "AEXPR_OP" and op and op[-1] in _REFLEXIVE_OPS):
        if not _stable(lexpr) or _shape(lexpr, target) != _shape(rexpr, target):
            return False  # whatever the constants are
        if contains(lexpr, _CONSTANT):
            consulted.append(True)
        return _without_locations(lexpr, target) == _without_locations(rexpr, target)
    pattern = sval(rexpr) if isinstance(rexpr, dict) else None
    if pattern is None:
        return False
    consulted.append(True)
    if kind in ("AEXPR_LIKE", "AEXPR_ILIKE") and op and op[-1] in ("~~", "~~*"):
        return _MATCH_ALL_LIKE.fullmatch(pattern) is not None
    if kind == "AEXPR_OP" and op and op[-1] in ("~", "~*"):
        return pattern in _MATCH_ALL_REGEX
    return False


def where_truth(
    node: Any, consulted: list[bool] | None = None, target: frozenset[str] = frozenset()
) -> bool | None:
    """Whether a WHERE condition is constant: True (maybe every row), False, None (depends on rows).

    A condition that references no column is treated as possibly true unless it
    evaluates to false here: it selects all rows or none. `consulted` (if given) gets
    True when any part of the answer depended on a constant's value: `x = 1 OR 1 = 2`
    is None, as `x = 1 OR 1 = 1` is not (see facts.constant_sensitive).
    """
    if consulted is None:
        consulted = []
    if not isinstance(node, dict):
        return None
    if "BoolExpr" in node:
        body = node["BoolExpr"]
        parts = [where_truth(a, consulted, target) for a in body.get("args", [])]
        op = body.get("boolop")
        if op == "AND_EXPR":
            if all(p is True for p in parts):
                return True
            return False if any(p is False for p in parts) else None
        if op == "OR_EXPR":
            if any(p is True for p in parts):
                return True
            return False if all(p is False for p in parts) else None
        if op == "NOT_EXPR" and parts:
            return None if parts[0] is None else not parts[0]
        return None
    if _tautology(node, consulted, target):
        return True
    if contains(node, _NON_CONSTANT):
        return None
    consulted.append(True)
    value: Any = UNKNOWN
    if "A_Expr" in node:
        expr = node["A_Expr"]
        op = name_list(expr.get("name", []))
        if expr.get("kind") == "AEXPR_OP" and len(op) == 1 and op[0] in _OPS:
            left, right = const_value(expr.get("lexpr", {})), const_value(expr.get("rexpr", {}))
            if left is None or right is None:
                value = None
            elif not isinstance(left, _Unknown) and not isinstance(right, _Unknown):
                try:
                    value = _OPS[op[0]](left, right)
                except TypeError:
                    value = UNKNOWN
    elif "NullTest" in node:
        test = node["NullTest"]
        arg = const_value(test.get("arg", {}))
        if not isinstance(arg, _Unknown):
            is_null = arg is None
            value = is_null if test.get("nulltesttype") == "IS_NULL" else not is_null
    else:
        value = as_bool(const_value(node))
    if value is None or value is False:
        return False
    return True  # true, or constant but not evaluated here: possibly every row


def literal_text(node: Any) -> str | None:
    """The string of a literal, through casts (`'hr.pay'::regclass`), else None."""
    while isinstance(node, dict) and "TypeCast" in node:
        node = node["TypeCast"].get("arg")
    const = node.get("A_Const") if isinstance(node, dict) else None
    if const is not None and "sval" in const:
        return const["sval"].get("sval", "")
    return None


_IDENT = re.compile(r'\s*(?:"((?:[^"]|"")+)"|([A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*))\s*')


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _truncated(name: str) -> str:
    data = name.encode("utf-8")
    if len(data) <= 63:  # NAMEDATALEN - 1
        return name
    return data[:63].decode("utf-8", "ignore")


def qualified_name(text: str) -> list[str] | None:
    """`schema.table` as regclass input reads it (unquoted parts folded to lower case,
    `"..."` kept); None for anything else (an OID, odd syntax): the caller then
    assumes any table."""
    parts: list[str] = []
    pos = 0
    while True:
        m = _IDENT.match(text, pos)
        if m is None:
            return None
        part = m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
        if m.group(1) is None:
            part = part.translate(_ASCII_LOWER)  # as PostgreSQL folds: ASCII only
        parts.append(_truncated(part))
        pos = m.end()
        if pos == len(text):
            return parts if len(parts) <= 3 else None
        if text[pos] != ".":
            return None
        pos += 1
