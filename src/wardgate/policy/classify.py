"""Classify SQL statements from PostgreSQL's own parse tree.

Theory of operation: `classify_message(text)` parses a whole simple-query message with
pglast (libpg_query: the PostgreSQL 18 parser) into its JSON tree, splits it into
statements by the parser's own statement locations, and walks EVERY node of each
statement with `_Walker`. Typed nodes (`{"DeleteStmt": {...}}`) dispatch to handlers;
fields whose type is fixed appear untyped in the JSON and are recognised by their keys
(a RangeVar has `relname` and `relpersistence`, a FuncCall `funcname` and `funcformat`).
Nested statements (CTE bodies, subqueries, EXPLAIN, PREPARE, COPY queries), DO blocks and
CREATE FUNCTION bodies (SQL via the SQL parser, PL/pgSQL via `bodies.analyse_plpgsql`)
are classified too and folded into the statement's facts, so a dangerous call anywhere
in a statement is seen. Identifiers arrive already case-folded and unescaped by the
parser (`"PG_READ_FILE"` stays upper case and is a different function; `U&"..."` is
resolved), so no text-level normalisation is ever needed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pglast
from pglast.parser import ParseError, parse_sql_json

from wardgate.policy.facts import (
    FILE_FUNCTIONS,
    LARGE_OBJECT_FILE_FUNCTIONS,
    SQL_STRING_FUNCTIONS,
    StatementFacts,
)

__all__ = ["ParseError", "classify_message", "classify_sql", "statement_texts", "READ_KINDS"]

# Kinds that by themselves change nothing stored in the database.
READ_KINDS = frozenset(
    {
        "select",
        "values",
        "show",
        "explain",
        "set",
        "transaction",
        "prepare",
        "execute",
        "deallocate",
        "listen",
        "unlisten",
        "notify",
        "declare_cursor",
        "fetch",
        "close_portal",
        "discard",
        "lock",
        "checkpoint",
        "copy",
        "variable_show",
    }
)

_KIND_NAMES = {
    "SelectStmt": "select",
    "InsertStmt": "insert",
    "UpdateStmt": "update",
    "DeleteStmt": "delete",
    "MergeStmt": "merge",
    "CopyStmt": "copy",
    "CallStmt": "call",
    "DoStmt": "do",
    "VariableSetStmt": "set",
    "VariableShowStmt": "show",
    "TransactionStmt": "transaction",
    "PrepareStmt": "prepare",
    "ExecuteStmt": "execute",
    "DeallocateStmt": "deallocate",
    "ExplainStmt": "explain",
    "DropdbStmt": "drop_database",
    "TruncateStmt": "truncate",
    "AlterSystemStmt": "alter_system",
    "CreateRoleStmt": "create_role",
    "AlterRoleStmt": "alter_role",
    "AlterRoleSetStmt": "alter_role",
    "DropRoleStmt": "drop_role",
    "CreateStmt": "create_table",
    "ViewStmt": "create_view",
    "IndexStmt": "create_index",
    "CreatedbStmt": "create_database",
    "CreateSchemaStmt": "create_schema",
    "CreateTrigStmt": "create_trigger",
    "RuleStmt": "create_rule",
    "CreateExtensionStmt": "create_extension",
    "CreateForeignServerStmt": "create_server",
    "CreateUserMappingStmt": "create_user_mapping",
    "CreateForeignTableStmt": "create_foreign_table",
    "CreateSeqStmt": "create_sequence",
    "DeclareCursorStmt": "declare_cursor",
    "ClosePortalStmt": "close_portal",
    "LoadStmt": "load",
    "DropOwnedStmt": "drop_owned",
    "ReassignOwnedStmt": "reassign_owned",
}
_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TRUE_STRINGS = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_STRINGS = frozenset({"f", "false", "n", "no", "off", "0"})
_ROLE_SETTINGS = frozenset({"role", "session_authorization"})
_FOREIGN_EXTENSIONS = frozenset({"dblink", "postgres_fdw", "file_fdw", "adminpack"})
_FOREIGN_KINDS = frozenset(
    {
        "CreateForeignServerStmt",
        "AlterForeignServerStmt",
        "CreateUserMappingStmt",
        "AlterUserMappingStmt",
        "CreateFdwStmt",
        "AlterFdwStmt",
        "CreateForeignTableStmt",
        "ImportForeignSchemaStmt",
        "CreateSubscriptionStmt",
        "AlterSubscriptionStmt",
    }
)


def _kind_of(node_type: str) -> str:
    name = _KIND_NAMES.get(node_type)
    if name is None:
        base = node_type[:-4] if node_type.endswith("Stmt") else node_type
        name = _SNAKE.sub("_", base).lower()
    return name


def _sval(node: Any) -> str | None:
    """The string of a `{"String": {"sval": ...}}` node or of a string A_Const."""
    if isinstance(node, dict):
        if "String" in node:
            return node["String"].get("sval", "")
        const = node.get("A_Const")
        if const is not None and "sval" in const:
            return const["sval"].get("sval", "")
    return None


def _names(items: list[Any]) -> list[str]:
    return [s for s in (_sval(i) for i in items) if s is not None]


def statement_texts(text: str, stmts: list[dict[str, Any]]) -> list[str]:
    """Slice the message text into statements using the parser's byte locations."""
    data = text.encode("utf-8")
    out = []
    for raw in stmts:
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0)
        chunk = data[start : start + length] if length else data[start:]
        out.append(chunk.decode("utf-8", errors="replace").strip())
    return out


def classify_message(text: str) -> list[tuple[str, StatementFacts]]:
    """Parse a message and classify each statement; raises ParseError on bad SQL."""
    tree = json.loads(parse_sql_json(text))
    stmts = tree.get("stmts", [])
    if len(stmts) == 1:
        texts = [text]
    else:
        texts = statement_texts(text, stmts)
    out = []
    for raw, stmt_text in zip(stmts, texts, strict=True):
        facts = _Walker(stmt_text).classify(raw.get("stmt", {}))
        try:
            facts.fingerprint = pglast.fingerprint(stmt_text)
        except Exception:  # noqa: BLE001 - the statement parsed above; never fatal
            facts.fingerprint = ""
        out.append((stmt_text, facts))
    return out


def classify_sql(text: str) -> StatementFacts:
    """Classify nested SQL (a body, a string argument) into one merged set of facts."""
    merged = StatementFacts()
    for _, facts in classify_message(text):
        merged.merge(facts)
    return merged


def _contains(node: Any, types: frozenset[str]) -> bool:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in types:
                return True
            if isinstance(value, dict | list) and _contains(value, types):
                return True
    elif isinstance(node, list):
        return any(_contains(v, types) for v in node)
    return False


_NON_CONSTANT = frozenset({"ColumnRef", "CurrentOfExpr"})


def _const_value(node: dict[str, Any]) -> Any:
    """A Python value for a literal (through casts), or _UNKNOWN."""
    if "TypeCast" in node:
        inner = _const_value(node["TypeCast"].get("arg", {}))
        names = _names(node["TypeCast"].get("typeName", {}).get("names", []))
        if names and names[-1] in ("bool", "boolean"):
            return _as_bool(inner)
        return inner
    const = node.get("A_Const")
    if const is None:
        return _UNKNOWN
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
            return _UNKNOWN
    if "sval" in const:
        return const["sval"].get("sval", "")
    return _UNKNOWN


class _Unknown:
    pass


_UNKNOWN = _Unknown()


def _as_bool(value: Any) -> Any:
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
    return _UNKNOWN


_OPS = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _truth(node: Any) -> bool | None:
    """Whether a WHERE condition is constant: True (maybe every row), False, None (depends on rows).

    A condition that references no column is treated as possibly true unless it
    evaluates to false here: it selects all rows or none.
    """
    if not isinstance(node, dict):
        return None
    if "BoolExpr" in node:
        body = node["BoolExpr"]
        parts = [_truth(a) for a in body.get("args", [])]
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
    if _contains(node, _NON_CONSTANT):
        return None
    value: Any = _UNKNOWN
    if "A_Expr" in node:
        expr = node["A_Expr"]
        op = _names(expr.get("name", []))
        if expr.get("kind") == "AEXPR_OP" and len(op) == 1 and op[0] in _OPS:
            left, right = _const_value(expr.get("lexpr", {})), _const_value(expr.get("rexpr", {}))
            if left is None or right is None:
                value = None
            elif not isinstance(left, _Unknown) and not isinstance(right, _Unknown):
                try:
                    value = _OPS[op[0]](left, right)
                except TypeError:
                    value = _UNKNOWN
    elif "NullTest" in node:
        test = node["NullTest"]
        arg = _const_value(test.get("arg", {}))
        if not isinstance(arg, _Unknown):
            is_null = arg is None
            value = is_null if test.get("nulltesttype") == "IS_NULL" else not is_null
    else:
        value = _as_bool(_const_value(node))
    if value is None or value is False:
        return False
    return True  # true, or constant but not evaluated here: possibly every row


class _Walker:
    """Walks one statement's JSON tree and fills a StatementFacts."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.facts = StatementFacts()
        self.scopes: list[set[str]] = []
        self.aliases: dict[str, str] = {}
        self.raw_columns: list[list[str]] = []

    # -- entry ---------------------------------------------------------------------
    def classify(self, stmt: dict[str, Any]) -> StatementFacts:
        self.walk(stmt)
        if not self.facts.kind and stmt:
            self.facts.kind = _kind_of(next(iter(stmt)))
        self._resolve_columns()
        return self.facts

    def _resolve_columns(self) -> None:
        tables = {name for _, name in self.facts.tables}
        only = next(iter(tables)) if len(tables) == 1 else None
        for fields in self.raw_columns:
            column = fields[-1]
            if len(fields) == 1:
                if column in self.aliases or column in tables:
                    # a bare table name or alias: the whole row
                    self.facts.columns.add((self.aliases.get(column, column), "*"))
                else:
                    self.facts.columns.add((only, column))
            else:
                qualifier = fields[-2]
                self.facts.columns.add((self.aliases.get(qualifier, qualifier), column))

    # -- generic walk --------------------------------------------------------------
    def walk(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self.walk(item)
            return
        if not isinstance(node, dict):
            return
        if len(node) == 1:
            key = next(iter(node))
            body = node[key]
            if key[:1].isupper() and isinstance(body, dict):
                handler = _HANDLERS.get(key)
                if handler is not None:
                    handler(self, body)
                else:
                    self.generic(key, body)
                return
        if "relname" in node and "relpersistence" in node:
            self.range_var(node)
        elif "objname" in node and isinstance(node["objname"], list):
            self.object_with_args(node)
        elif "funcname" in node and "funcformat" in node:
            self.func_call(node)
        else:
            self.walk_fields(node)

    def walk_fields(self, body: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
        for key, value in body.items():
            if key not in skip and isinstance(value, dict | list):
                self.walk(value)

    def add_kind(self, kind: str) -> None:
        if not self.facts.kind:
            self.facts.kind = kind
        self.facts.kinds.add(kind)
        if kind not in READ_KINDS:
            self.facts.writes = True

    def generic(self, node_type: str, body: dict[str, Any]) -> None:
        if node_type.endswith("Stmt"):
            self.add_kind(_kind_of(node_type))
            if node_type in _FOREIGN_KINDS:
                self.facts.add_feature("foreign_server", f"{_kind_of(node_type)} statement")
        self.walk_fields(body)

    def with_scope(self, body: dict[str, Any]) -> None:
        """Walk a statement that may carry a WITH clause, resolving CTE names in scope."""
        clause = body.get("withClause")
        if not clause:
            self.walk_fields(body)
            return
        ctes = [c.get("CommonTableExpr", {}) for c in clause.get("ctes", [])]
        names = [c.get("ctename", "") for c in ctes]
        if clause.get("recursive"):
            self.scopes.append(set(names))
            for cte in ctes:
                self.walk_fields(cte)
        else:
            for i, cte in enumerate(ctes):
                self.scopes.append(set(names[:i]))
                self.walk_fields(cte)
                self.scopes.pop()
            self.scopes.append(set(names))
        self.walk_fields(body, skip=("withClause",))
        self.scopes.pop()

    # -- names ---------------------------------------------------------------------
    def range_var(self, body: dict[str, Any]) -> None:
        schema = body.get("schemaname")
        name = body.get("relname", "")
        alias = body.get("alias", {}).get("aliasname")
        if schema is None and any(name in scope for scope in self.scopes):
            if alias:
                self.aliases[alias] = name
            return  # a CTE reference, not a table
        self.facts.tables.add((schema, name))
        if schema:
            self.facts.schemas.add(schema)
        if alias:
            self.aliases[alias] = name

    def object_with_args(self, body: dict[str, Any]) -> None:
        """A function named by signature (CREATE CAST ... WITH FUNCTION, DROP FUNCTION, ...)."""
        names = _names(body.get("objname", []))
        if names and (names[-1][:1].isalpha() or names[-1][:1] == "_"):
            self.note_function(names[0] if len(names) > 1 else None, names[-1], None)
        self.walk_fields(body, skip=("objname",))

    def column_ref(self, body: dict[str, Any]) -> None:
        fields = []
        for f in body.get("fields", []):
            if "A_Star" in f:
                fields.append("*")
            else:
                s = _sval(f)
                if s is not None:
                    fields.append(s)
        if fields:
            self.raw_columns.append(fields)

    def func_call(self, body: dict[str, Any]) -> None:
        names = _names(body.get("funcname", []))
        if names:
            self.note_function(names[0] if len(names) > 1 else None, names[-1], body)
        self.walk_fields(body, skip=("funcname",))

    def note_function(self, schema: str | None, name: str, body: dict[str, Any] | None) -> None:
        facts = self.facts
        facts.functions.add((schema, name))
        if name in FILE_FUNCTIONS:
            facts.add_feature("file_access", f"calls server file function {name}()")
        elif name in LARGE_OBJECT_FILE_FUNCTIONS:
            facts.add_feature("large_object_file", f"calls {name}() on a server file")
        elif name.startswith("dblink"):
            facts.add_feature("dblink", f"calls {name}()")
        elif name.startswith("postgres_fdw"):
            facts.add_feature("foreign_server", f"calls {name}()")
        elif name == "set_config" and body is not None:
            facts.constant_sensitive = True
            args = body.get("args", [])
            setting = _sval(args[0]) if args else None
            if setting is None:
                facts.add_feature("dynamic_sql", "set_config() with a computed setting name")
            elif setting.strip().lower() in _ROLE_SETTINGS:
                facts.add_feature("set_role", f"set_config('{setting}', ...) changes the role")
            elif setting.strip().lower() == "search_path":
                facts.add_feature("search_path", "set_config('search_path', ...)")
        elif name in SQL_STRING_FUNCTIONS and body is not None:
            facts.constant_sensitive = True
            args = body.get("args", [])
            index = SQL_STRING_FUNCTIONS[name]
            query = _sval(args[index]) if len(args) > index else None
            self.nested_sql(query, f"{name}() runs a query given as text")

    def nested_sql(self, query: str | None, what: str) -> None:
        """Classify SQL that arrives as a string; what cannot be read goes to review."""
        if query is None:
            self.facts.add_feature("dynamic_sql", f"{what} (computed, not analysable)")
            return
        try:
            self.facts.merge(classify_sql(query))
        except (ParseError, RecursionError):
            self.facts.add_feature("unanalysable_body", f"{what} (does not parse)")


def _h_select(w: _Walker, body: dict[str, Any]) -> None:
    if "valuesLists" in body and "targetList" not in body:
        w.add_kind("values")  # a VALUES list (also the rows of INSERT ... VALUES)
    else:
        w.add_kind("select")
        w.facts.reads = True
    if body.get("intoClause"):
        w.add_kind("create_table_as")
    w.with_scope(body)


def _where_check(w: _Walker, body: dict[str, Any], kind: str, key: str) -> None:
    where = body.get(key)
    if where is None:
        w.facts.without_where = True
        w.facts.notes.append(f"{kind.upper()} without a WHERE clause")
        return
    truth = _truth(where)
    if truth is not None:
        w.facts.constant_sensitive = True
    if truth is True:
        w.facts.without_where = True
        w.facts.notes.append(f"{kind.upper()} with a constant-true WHERE clause")


def _h_dml(kind: str):
    def handler(w: _Walker, body: dict[str, Any]) -> None:
        w.add_kind(kind)
        relation = body.get("relation")
        if isinstance(relation, dict) and "relname" in relation:
            # the target is always a real table, even when a CTE has the same name
            name = relation["relname"]
            w.facts.tables.add((relation.get("schemaname"), name))
            if relation.get("schemaname"):
                w.facts.schemas.add(relation["schemaname"])
            alias = relation.get("alias", {}).get("aliasname")
            if alias:
                w.aliases[alias] = name
            for target in body.get("cols", []) + body.get("targetList", []):
                column = target.get("ResTarget", {}).get("name") if kind != "select" else None
                if column and kind in ("insert", "update"):
                    w.facts.columns.add((name, column))
        if body.get("returningList") or body.get("returningClause"):
            w.facts.reads = True
        if kind in ("update", "delete"):
            _where_check(w, body, kind, "whereClause")
        elif kind == "merge":
            actions = {
                c.get("MergeWhenClause", {}).get("commandType")
                for c in body.get("mergeWhenClauses", [])
            }
            if actions & {"CMD_UPDATE", "CMD_DELETE"}:
                _where_check(w, body, kind, "joinCondition")
        w.with_scope(body)

    return handler


def _h_copy(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("copy")
    w.facts.constant_sensitive = True
    if body.get("is_program"):
        w.facts.add_feature("copy_program", "COPY ... PROGRAM runs a server program")
    elif body.get("filename"):
        w.facts.add_feature("copy_server_file", "COPY reads or writes a server file")
    if body.get("is_from"):
        w.facts.writes = True
        w.facts.add_feature("copy_from", "COPY FROM")
    else:
        w.facts.reads = True
        w.facts.add_feature("copy_to", "COPY TO")
    w.walk_fields(body)


def _h_variable_set(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("set")
    w.facts.constant_sensitive = True
    name = (body.get("name") or "").lower()
    if name in _ROLE_SETTINGS:
        w.facts.add_feature("set_role", f"changes {name}")
    elif name == "search_path":
        w.facts.add_feature("search_path", "changes search_path")
    w.walk_fields(body)


def _h_role(kind: str):
    def handler(w: _Walker, body: dict[str, Any]) -> None:
        w.add_kind(kind)
        for opt in body.get("options", []):
            elem = opt.get("DefElem", {})
            defname = elem.get("defname")
            arg = elem.get("arg", {})
            enabled = arg.get("Boolean", {}).get("boolval", False) if "Boolean" in arg else True
            if defname == "superuser" and enabled:
                w.facts.add_feature("superuser_role", f"{kind} grants SUPERUSER")
            elif defname == "bypassrls" and enabled:
                w.facts.add_feature("bypassrls_role", f"{kind} grants BYPASSRLS")
            elif defname in ("addroleto", "rolemembers", "adminmembers"):
                w.add_kind("grant")
                w.facts.notes.append(f"{kind} grants role membership")
        w.walk_fields(body)

    return handler


def _h_drop(w: _Walker, body: dict[str, Any]) -> None:
    object_type = body.get("removeType", "OBJECT_UNKNOWN")
    kind = "drop_" + object_type.removeprefix("OBJECT_").lower()
    w.add_kind(kind)
    if body.get("behavior") == "DROP_CASCADE":
        w.facts.add_feature("cascade", f"{kind} ... CASCADE")
    for obj in body.get("objects", []):
        if object_type == "OBJECT_SCHEMA":
            name = _sval(obj)
            if name:
                w.facts.schemas.add(name)
        elif (
            isinstance(obj, dict)
            and "List" in obj
            and object_type
            in (
                "OBJECT_TABLE",
                "OBJECT_VIEW",
                "OBJECT_MATVIEW",
                "OBJECT_FOREIGN_TABLE",
            )
        ):
            names = _names(obj["List"].get("items", []))
            if names:
                w.facts.tables.add((names[-2] if len(names) > 1 else None, names[-1]))
    w.walk_fields(body, skip=("objects",))


def _h_alter_table(w: _Walker, body: dict[str, Any]) -> None:
    objtype = body.get("objtype", "OBJECT_TABLE")
    w.add_kind("alter_" + objtype.removeprefix("OBJECT_").lower())
    for cmd in body.get("cmds", []):
        c = cmd.get("AlterTableCmd", {})
        if c.get("subtype") == "AT_DropColumn":
            w.facts.add_feature("drop_column", f"drops column {c.get('name')}")
            if c.get("behavior") == "DROP_CASCADE":
                w.facts.add_feature("cascade", "DROP COLUMN ... CASCADE")
    w.walk_fields(body)


def _h_grant(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("grant" if body.get("is_grant") else "revoke")
    w.walk_fields(body)


def _h_explain(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("explain")
    for opt in body.get("options", []):
        elem = opt.get("DefElem", {})
        if elem.get("defname") == "analyze":
            arg = elem.get("arg")
            if arg is None or _as_bool(_sval(arg) or "true") is not False:
                w.facts.add_feature("explain_analyze", "EXPLAIN ANALYZE runs the statement")
    w.walk_fields(body)


def _h_prepare(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("prepare")
    w.facts.constant_sensitive = True
    inner = _Walker(w.text)
    inner.walk(body.get("query", {}))
    inner._resolve_columns()
    w.facts.prepares = body.get("name", "")
    w.facts.prepared_facts = inner.facts
    w.facts.merge(inner.facts)
    w.walk_fields(body, skip=("query",))


def _h_execute(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("execute")
    w.facts.constant_sensitive = True
    w.facts.executes = body.get("name", "")
    w.walk_fields(body)


def _h_deallocate(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("deallocate")
    w.facts.constant_sensitive = True
    w.facts.deallocates = "*" if body.get("isall") else body.get("name", "")


def _h_do(w: _Walker, body: dict[str, Any]) -> None:
    from wardgate.policy.bodies import analyse_do

    w.add_kind("do")
    w.facts.writes = True
    w.facts.constant_sensitive = True
    language, source = "plpgsql", ""
    for arg in body.get("args", []):
        elem = arg.get("DefElem", {})
        if elem.get("defname") == "language":
            language = (_sval(elem.get("arg")) or "plpgsql").lower()
        elif elem.get("defname") == "as":
            source = _sval(elem.get("arg")) or ""
    w.facts.merge(analyse_do(language, source))


def _h_create_function(w: _Walker, body: dict[str, Any]) -> None:
    from wardgate.policy.bodies import analyse_function

    kind = "create_procedure" if body.get("is_procedure") else "create_function"
    w.add_kind(kind)
    w.facts.constant_sensitive = True
    names = _names(body.get("funcname", []))
    language, source = "sql", None
    for opt in body.get("options", []):
        elem = opt.get("DefElem", {})
        if elem.get("defname") == "language":
            language = (_sval(elem.get("arg")) or "sql").lower()
        elif elem.get("defname") == "as":
            arg = elem.get("arg")
            if isinstance(arg, dict) and "List" in arg:
                arg = arg["List"].get("items", [])
            parts = _names(arg) if isinstance(arg, list) else [_sval(arg) or ""]
            source = parts[0] if len(parts) == 1 else " ".join(parts)
            if len(parts) > 1:  # AS 'obj_file', 'link_symbol'
                source = parts[1]
    body_walker = _Walker(w.text)
    if body.get("sql_body"):
        body_walker.walk(body["sql_body"])
        body_walker._resolve_columns()
        body_facts = body_walker.facts
    else:
        body_facts = analyse_function(language, source, w.text)
    w.facts.creates_function = names[-1] if names else None
    w.facts.function_body = body_facts
    w.facts.merge(body_facts)
    w.walk_fields(body, skip=("sql_body", "funcname"))


def _h_trigger(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("create_event_trigger" if "eventname" in body else "create_trigger")
    names = _names(body.get("funcname", []))
    if names:
        w.note_function(names[0] if len(names) > 1 else None, names[-1], None)
    w.walk_fields(body, skip=("funcname",))


_FUNCTION_DEFNAMES = frozenset(
    {
        "procedure",
        "function",
        "sfunc",
        "finalfunc",
        "combinefunc",
        "serialfunc",
        "deserialfunc",
        "msfunc",
        "minvfunc",
        "mfinalfunc",
        "restrict",
        "join",
        "input",
        "output",
        "receive",
        "send",
        "typmod_in",
        "typmod_out",
        "analyze",
        "subtype_diff",
        "canonical",
    }
)


def _h_define(w: _Walker, body: dict[str, Any]) -> None:
    """CREATE OPERATOR / AGGREGATE / TYPE ...: the functions they will call."""
    w.add_kind("create_" + body.get("kind", "OBJECT_UNKNOWN").removeprefix("OBJECT_").lower())
    for item in body.get("definition", []):
        elem = item.get("DefElem", {})
        if elem.get("defname", "").lower() in _FUNCTION_DEFNAMES:
            arg = elem.get("arg", {})
            names = _names(arg.get("TypeName", {}).get("names", [])) or _names(
                arg.get("List", {}).get("items", [])
            )
            if names:
                w.note_function(names[0] if len(names) > 1 else None, names[-1], None)
    w.walk_fields(body)


def _h_extension(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("create_extension")
    name = body.get("extname", "")
    if name == "dblink":
        w.facts.add_feature("dblink", "creates the dblink extension")
    elif name == "adminpack":
        w.facts.add_feature("file_access", "creates the adminpack extension")
    elif name in _FOREIGN_EXTENSIONS or name.endswith("_fdw"):
        w.facts.add_feature("foreign_server", f"creates the {name} extension")
    w.walk_fields(body)


def _h_setting_holder(kind: str):
    """ALTER ROLE / DATABASE ... SET x: the nested SET arrives untyped."""

    def handler(w: _Walker, body: dict[str, Any]) -> None:
        w.add_kind(kind)
        setstmt = body.get("setstmt")
        if isinstance(setstmt, dict):
            _h_variable_set(w, setstmt)
        w.walk_fields(body, skip=("setstmt",))

    return handler


def _h_default_privileges(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("alter_default_privileges")
    action = body.get("action", {})
    w.add_kind("grant" if action.get("is_grant") else "revoke")
    w.walk_fields(body)


def _h_call(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("call")
    w.facts.writes = True
    w.walk_fields(body)


def _h_column_ref(w: _Walker, body: dict[str, Any]) -> None:
    w.column_ref(body)


def _h_func_call(w: _Walker, body: dict[str, Any]) -> None:
    w.func_call(body)


def _h_range_var(w: _Walker, body: dict[str, Any]) -> None:
    w.range_var(body)


def _h_transaction(w: _Walker, body: dict[str, Any]) -> None:
    w.add_kind("transaction")


def _h_constant(w: _Walker, body: dict[str, Any]) -> None:
    return


_HANDLERS = {
    "SelectStmt": _h_select,
    "InsertStmt": _h_dml("insert"),
    "UpdateStmt": _h_dml("update"),
    "DeleteStmt": _h_dml("delete"),
    "MergeStmt": _h_dml("merge"),
    "CopyStmt": _h_copy,
    "VariableSetStmt": _h_variable_set,
    "CreateRoleStmt": _h_role("create_role"),
    "AlterRoleStmt": _h_role("alter_role"),
    "DropStmt": _h_drop,
    "AlterTableStmt": _h_alter_table,
    "GrantStmt": _h_grant,
    "GrantRoleStmt": _h_grant,
    "ExplainStmt": _h_explain,
    "PrepareStmt": _h_prepare,
    "ExecuteStmt": _h_execute,
    "DeallocateStmt": _h_deallocate,
    "DoStmt": _h_do,
    "CreateFunctionStmt": _h_create_function,
    "CreateTrigStmt": _h_trigger,
    "CreateEventTrigStmt": _h_trigger,
    "DefineStmt": _h_define,
    "CreateExtensionStmt": _h_extension,
    "CallStmt": _h_call,
    "AlterRoleSetStmt": _h_setting_holder("alter_role"),
    "AlterDatabaseSetStmt": _h_setting_holder("alter_database"),
    "AlterDefaultPrivilegesStmt": _h_default_privileges,
    "ColumnRef": _h_column_ref,
    "FuncCall": _h_func_call,
    "RangeVar": _h_range_var,
    "TransactionStmt": _h_transaction,
    "A_Const": _h_constant,
    "String": _h_constant,
}
