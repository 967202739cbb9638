"""Classify SQL statements from PostgreSQL's own parse tree.

Theory of operation: `classify_message(text)` parses a whole simple-query message with
pglast (libpg_query: the PostgreSQL 18 parser) into its JSON tree, splits it into
statements by the parser's own statement locations, and walks EVERY node of each
statement with `Walker`. Typed nodes (`{"DeleteStmt": {...}}`) dispatch to handlers;
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
    NAMED_READ_FUNCTIONS,
    ROLE_SETTINGS,
    SQL_STRING_FUNCTIONS,
    VALUE_CATALOGS,
    StatementFacts,
    is_on,
    is_utf8_name,
)
from wardgate.policy.pgtree import literal_text, name_list, qualified_name, sval
from wardgate.policy.statements import HANDLERS

__all__ = [
    "ParseError",
    "Walker",
    "classify_message",
    "classify_sql",
    "statement_texts",
    "READ_KINDS",
]

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
# catalog views that show values of table columns, or statement texts with their values
_SAMPLE_VIEWS = frozenset(
    {"pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic", "pg_statistic_ext_data"}
)
_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
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
        facts = Walker(stmt_text).classify(raw.get("stmt", {}))
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


class Walker:
    """Walks one statement's JSON tree and fills a StatementFacts."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.facts = StatementFacts()
        self.scopes: list[set[str]] = []
        self.aliases: dict[str, str] = {}
        self.raw_columns: list[list[str]] = []
        # (column ref, table written) of values copied into another column (statements.py)
        self.raw_copied: list[tuple[list[str], str | None]] = []

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
                    if column in ("new", "old"):
                        # a trigger's or rule's whole row (`to_jsonb(NEW)`, `RAISE NOTICE
                        # '%', OLD`): every column of whatever table it is bound to
                        self.facts.columns.add((column, "*"))
            else:
                qualifier = fields[-2]
                self.facts.columns.add((self.aliases.get(qualifier, qualifier), column))
        for ref, table in self.raw_copied:
            if len(ref) > 1:
                table = self.aliases.get(ref[-2], ref[-2])
            elif len(tables) > 1:
                table = None  # an unqualified column over several tables: any (fail closed)
            self.facts.copied.add((table, ref[-1]))

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
                handler = HANDLERS.get(key)
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
        if name in _SAMPLE_VIEWS and schema in (None, "pg_catalog"):
            # values sampled from every table's columns (most_common_vals, histograms):
            # a read of any table
            self.facts.tables.add(("*", "*"))
            self.facts.notes.append(f"{name} shows values of every table's columns")
        if name in VALUE_CATALOGS:
            self.facts.columns.add((None, "*"))  # any column's values (see facts.py)

    def object_with_args(self, body: dict[str, Any]) -> None:
        """A function named by signature (CREATE CAST ... WITH FUNCTION, DROP FUNCTION, ...)."""
        names = name_list(body.get("objname", []))
        if len(names) > 1:
            self.facts.schemas.add(names[-2])
        if names and (names[-1][:1].isalpha() or names[-1][:1] == "_"):
            self.note_function(names[0] if len(names) > 1 else None, names[-1], None)
        self.walk_fields(body, skip=("objname",))

    def column_ref(self, body: dict[str, Any]) -> None:
        fields = []
        for f in body.get("fields", []):
            if "A_Star" in f:
                fields.append("*")
            else:
                s = sval(f)
                if s is not None:
                    fields.append(s)
        if fields:
            self.raw_columns.append(fields)

    def func_call(self, body: dict[str, Any]) -> None:
        names = name_list(body.get("funcname", []))
        if names:
            self.note_function(names[0] if len(names) > 1 else None, names[-1], body)
        self.walk_fields(body, skip=("funcname",))

    def note_function(self, schema: str | None, name: str, body: dict[str, Any] | None) -> None:
        facts = self.facts
        facts.functions.add((schema, name))
        if schema:
            facts.schemas.add(schema)  # a rule on a schema covers its functions too
        if name in VALUE_CATALOGS:
            facts.columns.add((None, "*"))  # any column's values (see facts.py)
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
            setting = sval(args[0]) if args else None
            if setting is None:
                facts.add_feature("dynamic_sql", "set_config() with a computed setting name")
            elif setting.strip().lower() in ROLE_SETTINGS:
                facts.add_feature("set_role", f"set_config('{setting}', ...) changes the role")
            elif setting.strip().lower() == "search_path":
                facts.add_feature("search_path", "set_config('search_path', ...)")
            elif setting.strip().lower().endswith("_preload_libraries"):
                self.add_kind("load")
            elif setting.strip().lower() == "standard_conforming_strings":
                value = sval(args[1]) if len(args) > 1 else None
                if not is_on(value):
                    facts.add_feature(
                        "lexer_setting", f"set_config('standard_conforming_strings', {value!r})"
                    )
            elif setting.strip().lower() == "client_encoding":
                value = sval(args[1]) if len(args) > 1 else None
                if not is_utf8_name(value):
                    facts.add_feature(
                        "client_encoding", f"set_config('client_encoding', {value!r})"
                    )
        elif name in NAMED_READ_FUNCTIONS and body is not None:
            facts.constant_sensitive = True
            args = body.get("args", [])
            self.named_read(name, literal_text(args[0]) if args else None)
        elif name in SQL_STRING_FUNCTIONS and body is not None:
            facts.constant_sensitive = True
            args = body.get("args", [])
            for index in SQL_STRING_FUNCTIONS[name]:
                if len(args) <= index:
                    continue
                query = sval(args[index])
                if query is None and "A_Const" in args[index]:
                    continue  # crosstab(sql, 3): a number, not a query
                self.nested_sql(query, f"{name}() runs a query given as text")

    def named_read(self, name: str, arg: str | None) -> None:
        """table_to_xml('hr.pay'), schema_to_xml('hr'), database_to_xml(), cursor_to_xml('c')
        read rows of a table, a schema, every table or a cursor named by a value, not in
        the statement's FROM: recorded as that read ("*" for any name; unknown = any)."""
        facts = self.facts
        facts.reads = True
        what = NAMED_READ_FUNCTIONS[name]
        if what == "cursor" and arg is not None and facts.fetches is None:
            facts.fetches = arg  # what the cursor reads, as a FETCH of it (PolicySession)
            return
        parts = qualified_name(arg) if what == "table" and arg is not None else None
        if parts is not None:
            schema = parts[-2] if len(parts) > 1 else None
            facts.tables.add((schema, parts[-1]))
            if schema:
                facts.schemas.add(schema)
            facts.columns.add((parts[-1], "*"))
            return
        if what == "schema" and arg is not None:
            facts.schemas.add(arg)
            facts.tables.add((arg, "*"))
        else:
            facts.schemas.add("*")
            facts.tables.add(("*", "*"))
        facts.columns.add((None, "*"))
        facts.notes.append(f"{name}() reads rows of tables named at run time")

    def nested_sql(self, query: str | None, what: str) -> None:
        """Classify SQL that arrives as a string; what cannot be read goes to review."""
        if query is None:
            self.facts.add_feature("dynamic_sql", f"{what} (computed, not analysable)")
            return
        try:
            self.facts.merge(classify_sql(query))
        except (ParseError, RecursionError):
            self.facts.add_feature("unanalysable_body", f"{what} (does not parse)")
