"""Handlers for the statement and expression nodes the classifier treats specially.

Theory of operation: `HANDLERS` maps a parse-node type to a function that records what
the node means (kinds, features, objects, properties) on the classifier's walker and
then walks the node's children, so nothing nested is skipped. Nodes without a handler
are walked generically by the walker (every `...Stmt` still yields its kind).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wardgate.policy.facts import ROLE_SETTINGS, is_on, is_utf8_name
from wardgate.policy.pgtree import as_bool, name_list, sval, where_truth

if TYPE_CHECKING:
    from wardgate.policy.classify import Walker

__all__ = ["HANDLERS"]

_PRELOAD_SETTINGS = frozenset(
    {"local_preload_libraries", "session_preload_libraries", "shared_preload_libraries"}
)
_FOREIGN_EXTENSIONS = frozenset({"dblink", "postgres_fdw", "file_fdw", "adminpack"})


def _h_select(w: Walker, body: dict[str, Any]) -> None:
    if "valuesLists" in body and "targetList" not in body:
        w.add_kind("values")  # a VALUES list (also the rows of INSERT ... VALUES)
    else:
        w.add_kind("select")
        w.facts.reads = True
    if body.get("intoClause"):
        w.add_kind("create_table_as")
    w.with_scope(body)


def _where_check(w: Walker, body: dict[str, Any], kind: str, key: str) -> None:
    where = body.get(key)
    if where is None:
        w.facts.without_where = True
        w.facts.notes.append(f"{kind.upper()} without a WHERE clause")
        return
    consulted: list[bool] = []
    # the target table's own names: `t.x` and `x` are one column there
    relation = body.get("relation") or {}
    target = frozenset(
        n for n in (relation.get("relname"), relation.get("alias", {}).get("aliasname")) if n
    )
    truth = where_truth(where, consulted, target)
    if truth is not None or consulted:
        # the answer depended on a constant: `x LIKE 'a%'` must not stand in for
        # `x LIKE '%'` in the normalized-text cache (both are `x LIKE $1`)
        w.facts.constant_sensitive = True
    if truth is True:
        w.facts.without_where = True
        w.facts.notes.append(f"{kind.upper()} with a constant-true WHERE clause")


def _column_refs(node: Any) -> list[list[str]]:
    """Every ColumnRef under `node`, as its name parts (`["c", "ssn"]`, `["ssn"]`)."""
    out: list[list[str]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("ColumnRef")
            if isinstance(ref, dict):
                parts = [
                    f["String"]["sval"].lower()
                    for f in ref.get("fields", [])
                    if isinstance(f, dict) and "String" in f
                ]
                if parts:
                    out.append(parts)
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def _copies(
    w: Walker, table: str | None, column: str | None, value: Any, incoming: str = ""
) -> None:
    """The columns `value` reads, written into `column` of `table` (None: not known): a
    copy of each into that column (`UPDATE t SET nick = ssn`), except of the column itself
    (`SET ssn = upper(ssn)`) and of `incoming`, the row being inserted (`excluded`),
    whose values the statement itself supplies. Resolved against the statement's aliases
    once it is walked (Walker._resolve_columns)."""
    for ref in _column_refs(value):
        if len(ref) > 1 and ref[-2] == incoming:
            continue
        if len(ref) == 1 and ref[0] == column:
            continue
        w.raw_copied.append((ref, table))


def _on_conflict(w: Walker, table: str, conflict: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE SET c = ...: updates stored rows, so it is an
    update of those columns too (a rule on `kinds: [update]` or on the column must see it)."""
    if conflict.get("action") != "ONCONFLICT_UPDATE":
        return
    w.add_kind("update")
    for target in conflict.get("targetList", []):
        res = target.get("ResTarget", {})
        column = res.get("name")
        if column:
            w.facts.columns.add((table, column))
        _copies(w, table, column, res.get("val"), incoming="excluded")


_MERGE_KINDS = {"CMD_UPDATE": "update", "CMD_DELETE": "delete", "CMD_INSERT": "insert"}


def _merge_actions(w: Walker, table: str, clauses: list[Any]) -> None:
    """MERGE ... WHEN ... THEN UPDATE SET c = ... / DELETE / INSERT (c): each action is
    that kind of statement on the target, writing those columns (a rule on
    `kinds: [delete]` or on the column must see it). Its actions write the source's
    columns into the target: an unqualified column may be the source's (table unknown)."""
    for clause in clauses:
        c = clause.get("MergeWhenClause", {}) if isinstance(clause, dict) else {}
        kind = _MERGE_KINDS.get(c.get("commandType", ""))
        if kind is None:
            continue
        w.add_kind(kind)
        targets = [t.get("ResTarget", {}) for t in c.get("targetList", [])]
        for res in targets:
            column = res.get("name")
            if column:
                w.facts.columns.add((table, column))
                if kind == "update":
                    _copies(w, None, column, res.get("val"))
        if kind == "insert":
            # INSERT (c) VALUES (src.x): the source's columns go into the target's
            names = [res.get("name") for res in targets]
            for i, value in enumerate(c.get("values", [])):
                _copies(w, None, names[i] if i < len(names) else None, value)


def _h_dml(kind: str):
    def handler(w: Walker, body: dict[str, Any]) -> None:
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
                if column and kind == "update":
                    _copies(w, name, column, target.get("ResTarget", {}).get("val"))
            if kind == "update" and name == "pg_settings":
                _settings_update(w, body)
            conflict = body.get("onConflictClause")
            if kind == "insert" and isinstance(conflict, dict):
                _on_conflict(w, name, conflict)
            if kind == "merge":
                _merge_actions(w, name, body.get("mergeWhenClauses", []))
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


def _setting_names(where: Any) -> set[str] | None:
    """The setting names `WHERE name = 'x'`, `name IN ('x', 'y')` (or an AND holding one)
    limits an update of pg_settings to, or None when the gateway cannot read them."""
    if not isinstance(where, dict):
        return None
    if "BoolExpr" in where:
        op = where["BoolExpr"].get("boolop")
        parts = [_setting_names(a) for a in where["BoolExpr"].get("args", [])]
        if op == "AND_EXPR":
            known = [p for p in parts if p is not None]
            return set().union(*known) if known else None
        if op == "OR_EXPR" and all(p is not None for p in parts):
            return set().union(*parts)  # type: ignore[arg-type]
        return None
    expr = where.get("A_Expr")
    if not isinstance(expr, dict) or name_list(expr.get("name", [])) != ["="]:
        return None
    left, right = expr.get("lexpr"), expr.get("rexpr")
    fields = (left or {}).get("ColumnRef", {}).get("fields", [])
    if not fields or sval(fields[-1]) != "name":
        return None
    if expr.get("kind") == "AEXPR_OP":
        value = sval(right)
        return None if value is None else {value.strip().lower()}
    if expr.get("kind") == "AEXPR_IN" and isinstance(right, dict):
        values = [sval(v) for v in right.get("List", {}).get("items", [])]
        if values and all(v is not None for v in values):
            return {v.strip().lower() for v in values}  # type: ignore[union-attr]
    return None


def _settings_update(w: Walker, body: dict[str, Any]) -> None:
    """`UPDATE pg_settings SET setting = v WHERE name = 'x'` is `SET x = v`: the view's
    rule calls set_config(). It changed search_path (or a lexer setting) unseen."""
    w.facts.constant_sensitive = True
    w.facts.add_feature("search_path", "UPDATE pg_settings changes settings as SET does")
    names = _setting_names(body.get("whereClause"))
    if names is None:
        w.facts.add_feature(
            "dynamic_sql", "UPDATE pg_settings with setting names the gateway cannot read"
        )
        return
    value = None
    for target in body.get("targetList", []):
        res = target.get("ResTarget", {})
        if res.get("name") == "setting":
            value = sval(res.get("val"))
    for name in names:
        if name in ROLE_SETTINGS:
            w.facts.add_feature("set_role", f"UPDATE pg_settings changes {name}")
        elif name in _PRELOAD_SETTINGS:
            w.add_kind("load")
        elif name == "standard_conforming_strings" and not is_on(value):
            w.facts.add_feature("lexer_setting", f"UPDATE pg_settings sets {name} to {value!r}")
        elif name == "client_encoding" and not is_utf8_name(value):
            w.facts.add_feature("client_encoding", f"UPDATE pg_settings sets {name} to {value!r}")


_STORED = "a stored {} changes the search_path of the session that uses it later"


def _h_view(w: Walker, body: dict[str, Any]) -> None:
    """A view of pg_settings changes settings when updated, in any later session."""
    w.add_kind("create_view")
    w.walk_fields(body)
    if {(None, "pg_settings"), ("pg_catalog", "pg_settings")} & w.facts.tables:
        w.facts.add_feature("stored_search_path", _STORED.format("view of pg_settings"))


def _h_rule(w: Walker, body: dict[str, Any]) -> None:
    """A rule's actions run in later sessions, where the policy never sees them."""
    w.add_kind("create_rule")
    before = "search_path" in w.facts.features
    w.walk_fields(body)
    if not before and "search_path" in w.facts.features:
        w.facts.add_feature("stored_search_path", _STORED.format("rule"))


def _h_copy(w: Walker, body: dict[str, Any]) -> None:
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


def _h_variable_set(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("set")
    w.facts.constant_sensitive = True
    name = (body.get("name") or "").lower()
    if name in ROLE_SETTINGS:
        w.facts.add_feature("set_role", f"changes {name}")
    elif name == "search_path":
        w.facts.add_feature("search_path", "changes search_path")
    elif name in _PRELOAD_SETTINGS and body.get("kind") != "VAR_RESET":
        # libraries loaded when a session starts: `ALTER ROLE ... SET
        # local_preload_libraries` is a LOAD for every later session of the role
        w.add_kind("load")
        w.facts.notes.append(f"sets {name}: a shared library loaded at session start")
    elif name == "standard_conforming_strings" and body.get("kind") == "VAR_SET_VALUE":
        args = body.get("args") or []
        value = sval(args[0]) if args else None
        if not is_on(value):
            w.facts.add_feature("lexer_setting", f"sets standard_conforming_strings to {value!r}")
    elif name == "client_encoding" and body.get("kind") == "VAR_SET_VALUE":
        args = body.get("args") or []
        value = sval(args[0]) if args else None
        if not is_utf8_name(value):
            w.facts.add_feature("client_encoding", f"sets client_encoding to {value!r}")
    w.walk_fields(body)


def _h_role(kind: str):
    def handler(w: Walker, body: dict[str, Any]) -> None:
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


def _h_drop(w: Walker, body: dict[str, Any]) -> None:
    object_type = body.get("removeType", "OBJECT_UNKNOWN")
    kind = "drop_" + object_type.removeprefix("OBJECT_").lower()
    w.add_kind(kind)
    if body.get("behavior") == "DROP_CASCADE":
        w.facts.add_feature("cascade", f"{kind} ... CASCADE")
    for obj in body.get("objects", []):
        # any object named with its schema (DROP TYPE hr.t, DROP SEQUENCE hr.s)
        qualified = []
        if isinstance(obj, dict) and "List" in obj:
            qualified = name_list(obj["List"].get("items", []))
        elif isinstance(obj, dict) and "TypeName" in obj:
            qualified = name_list(obj["TypeName"].get("names", []))
        if len(qualified) > 1:
            w.facts.schemas.add(qualified[-2])
        if isinstance(obj, dict) and "ObjectWithArgs" in obj:
            w.walk(obj)  # DROP FUNCTION f(): the function it names
        if object_type == "OBJECT_SCHEMA":
            name = sval(obj)
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
            names = name_list(obj["List"].get("items", []))
            if names:
                w.facts.tables.add((names[-2] if len(names) > 1 else None, names[-1]))
    w.walk_fields(body, skip=("objects",))


def _casts_itself(expr: Any, column: str) -> bool:
    """`c::int`, `CAST(c AS text)::int`: the column's own value, converted."""
    while isinstance(expr, dict) and "TypeCast" in expr:
        expr = expr["TypeCast"].get("arg")
    refs = _column_refs(expr) if isinstance(expr, dict) and "ColumnRef" in expr else []
    return len(refs) == 1 and refs[0][-1] == column.lower()


def _h_alter_table(w: Walker, body: dict[str, Any]) -> None:
    objtype = body.get("objtype", "OBJECT_TABLE")
    w.add_kind("alter_" + objtype.removeprefix("OBJECT_").lower())
    relation = body.get("relation") or {}
    table = relation.get("relname")
    for cmd in body.get("cmds", []):
        c = cmd.get("AlterTableCmd", {})
        subtype, definition = c.get("subtype"), c.get("def") or {}
        # the column a command changes is an object of the statement (a rule on
        # `pay.salary` sees ALTER COLUMN salary ...)
        column = c.get("name") or definition.get("ColumnDef", {}).get("colname")
        if table and column and objtype == "OBJECT_TABLE":
            w.facts.columns.add((table, column))
        # a column filled from others: ADD COLUMN ... GENERATED ALWAYS AS (expr), ALTER
        # COLUMN ... TYPE ... USING expr, ALTER COLUMN ... SET EXPRESSION AS (expr)
        if subtype == "AT_AddColumn":
            column_def = definition.get("ColumnDef", {})
            for con in column_def.get("constraints", []):
                con = con.get("Constraint", {})
                if con.get("contype") == "CONSTR_GENERATED":
                    _copies(w, table, column_def.get("colname"), con.get("raw_expr"))
        elif subtype == "AT_AlterColumnType":
            using = definition.get("ColumnDef", {}).get("raw_default")
            if table and column and using is not None and not _casts_itself(using, column):
                # ALTER COLUMN c TYPE ... USING expr rewrites c in every row: an UPDATE of
                # it without a WHERE clause (`USING c::int` only converts: not one)
                w.add_kind("update")
                w.facts.without_where = True
                w.facts.notes.append(f"ALTER COLUMN {column} TYPE ... USING rewrites every row")
            _copies(w, table, column, using)
        elif subtype == "AT_SetExpression":
            _copies(w, table, c.get("name"), definition)
        # the table's rows read under another table's name: INHERIT parent (this one),
        # ATTACH PARTITION child (the one named)
        elif subtype == "AT_AddInherit":
            w.facts.moved.add(_qualified(body.get("relation")))
        elif subtype == "AT_AttachPartition":
            w.facts.moved.add(_qualified(definition.get("PartitionCmd", {}).get("name")))
        if c.get("subtype") == "AT_DropColumn":
            w.facts.add_feature("drop_column", f"drops column {c.get('name')}")
            if c.get("behavior") == "DROP_CASCADE":
                w.facts.add_feature("cascade", "DROP COLUMN ... CASCADE")
    w.walk_fields(body)


def _h_grant(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("grant" if body.get("is_grant") else "revoke")
    w.walk_fields(body)


def _h_explain(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("explain")
    for opt in body.get("options", []):
        elem = opt.get("DefElem", {})
        if elem.get("defname") == "analyze":
            arg = elem.get("arg")
            if arg is None or as_bool(sval(arg) or "true") is not False:
                w.facts.add_feature("explain_analyze", "EXPLAIN ANALYZE runs the statement")
    w.walk_fields(body)


def _h_prepare(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("prepare")
    w.facts.constant_sensitive = True
    w.facts.touches_prepared = True
    inner = type(w)(w.text)
    inner.walk(body.get("query", {}))
    inner._resolve_columns()
    w.facts.prepares = body.get("name", "")
    w.facts.prepared_facts = inner.facts
    w.facts.merge(inner.facts)
    w.walk_fields(body, skip=("query",))


def _h_execute(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("execute")
    w.facts.constant_sensitive = True
    w.facts.executes = body.get("name", "")
    w.walk_fields(body)


_CURSOR_OPT_HOLD = 0x0020  # PostgreSQL's parsenodes.h


def _h_declare_cursor(w: Walker, body: dict[str, Any]) -> None:
    # the cursor's query is what a later FETCH of it reads (policy.engine remembers it,
    # as it does a PREPAREd statement for EXECUTE)
    w.add_kind("declare_cursor")
    inner = type(w)(w.text)
    inner.walk(body.get("query", {}))
    inner._resolve_columns()
    w.facts.declares = body.get("portalname", "")
    w.facts.cursor_facts = inner.facts
    w.facts.cursor_holds = bool(int(body.get("options", 0) or 0) & _CURSOR_OPT_HOLD)
    w.facts.merge(inner.facts)
    w.walk_fields(body, skip=("query",))


def _h_fetch(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("fetch")
    w.facts.fetches = body.get("portalname", "")


def _h_close_portal(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("close_portal")
    w.facts.closes_cursor = body.get("portalname") or "*"


def _h_deallocate(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("deallocate")
    w.facts.constant_sensitive = True
    w.facts.touches_prepared = True
    w.facts.deallocates = "*" if body.get("isall") else body.get("name", "")


def _h_do(w: Walker, body: dict[str, Any]) -> None:
    from wardgate.policy.bodies import analyse_do

    w.add_kind("do")
    w.facts.writes = True
    w.facts.constant_sensitive = True
    language, source = "plpgsql", ""
    for arg in body.get("args", []):
        elem = arg.get("DefElem", {})
        if elem.get("defname") == "language":
            language = (sval(elem.get("arg")) or "plpgsql").lower()
        elif elem.get("defname") == "as":
            source = sval(elem.get("arg")) or ""
    w.facts.merge(analyse_do(language, source))


def _h_create_function(w: Walker, body: dict[str, Any]) -> None:
    from wardgate.policy.bodies import analyse_function

    kind = "create_procedure" if body.get("is_procedure") else "create_function"
    w.add_kind(kind)
    w.facts.constant_sensitive = True
    names = name_list(body.get("funcname", []))
    language, source = "sql", None
    for opt in body.get("options", []):
        elem = opt.get("DefElem", {})
        if elem.get("defname") == "language":
            language = (sval(elem.get("arg")) or "sql").lower()
        elif elem.get("defname") == "as":
            arg = elem.get("arg")
            if isinstance(arg, dict) and "List" in arg:
                arg = arg["List"].get("items", [])
            parts = name_list(arg) if isinstance(arg, list) else [sval(arg) or ""]
            source = parts[0] if len(parts) == 1 else " ".join(parts)
            if len(parts) > 1:  # AS 'obj_file', 'link_symbol'
                source = parts[1]
    body_walker = type(w)(w.text)
    if body.get("sql_body"):
        body_walker.walk(body["sql_body"])
        body_walker._resolve_columns()
        body_facts = body_walker.facts
    else:
        body_facts = analyse_function(language, source, w.text)
    if len(names) > 1:
        w.facts.schemas.add(names[-2])
    w.facts.creates_function = names[-1] if names else None
    w.facts.function_body = body_facts
    w.facts.merge(body_facts)
    if "search_path" in body_facts.features:
        # its own `SET search_path = ...` clause is restored when it returns; a SET or
        # set_config() in the body is not, and a later session's policy never sees it
        w.facts.add_feature("stored_search_path", _STORED.format(kind.replace("create_", "")))
    w.walk_fields(body, skip=("sql_body", "funcname"))


def _h_trigger(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("create_event_trigger" if "eventname" in body else "create_trigger")
    names = name_list(body.get("funcname", []))
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


def _h_define(w: Walker, body: dict[str, Any]) -> None:
    """CREATE OPERATOR / AGGREGATE / TYPE ...: the functions they will call."""
    w.add_kind("create_" + body.get("kind", "OBJECT_UNKNOWN").removeprefix("OBJECT_").lower())
    for item in body.get("definition", []):
        elem = item.get("DefElem", {})
        if elem.get("defname", "").lower() in _FUNCTION_DEFNAMES:
            arg = elem.get("arg", {})
            names = name_list(arg.get("TypeName", {}).get("names", [])) or name_list(
                arg.get("List", {}).get("items", [])
            )
            if names:
                w.note_function(names[0] if len(names) > 1 else None, names[-1], None)
    w.walk_fields(body)


def _h_extension(w: Walker, body: dict[str, Any]) -> None:
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

    def handler(w: Walker, body: dict[str, Any]) -> None:
        w.add_kind(kind)
        setstmt = body.get("setstmt")
        if isinstance(setstmt, dict):
            _h_variable_set(w, setstmt)
        w.walk_fields(body, skip=("setstmt",))

    return handler


def _h_default_privileges(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("alter_default_privileges")
    action = body.get("action", {})
    w.add_kind("grant" if action.get("is_grant") else "revoke")
    w.walk_fields(body)


def _h_call(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("call")
    w.facts.writes = True
    w.walk_fields(body)


def _h_object_with_args(w: Walker, body: dict[str, Any]) -> None:
    # ALTER FUNCTION f() RENAME / SET SCHEMA / OWNER, DROP FUNCTION f(), COMMENT ON ...:
    # a rule on f must see it (renamed, f would be called under a name no rule has)
    w.object_with_args(body)


def _h_column_ref(w: Walker, body: dict[str, Any]) -> None:
    w.column_ref(body)


def _h_func_call(w: Walker, body: dict[str, Any]) -> None:
    w.func_call(body)


def _h_range_var(w: Walker, body: dict[str, Any]) -> None:
    w.range_var(body)


def _h_transaction(w: Walker, body: dict[str, Any]) -> None:
    w.add_kind("transaction")
    if body.get("kind") in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_PREPARE"):
        w.facts.ends_transaction = True


def _h_constant(w: Walker, body: dict[str, Any]) -> None:
    return


def _qualified(relation: Any) -> str:
    """`schema.table` or `table` of a RangeVar (empty when there is none)."""
    if not isinstance(relation, dict) or not relation.get("relname"):
        return ""
    schema = relation.get("schemaname")
    return f"{schema}.{relation['relname']}" if schema else relation["relname"]


def _h_alter_object_schema(w: Walker, body: dict[str, Any]) -> None:
    """ALTER ... SET SCHEMA s moves an object into s: the statement touches s too. For a
    table, a rule naming its schema (`public.t.ssn`) would no longer match it."""
    w.add_kind("alter_object_schema")
    if body.get("newschema"):
        w.facts.schemas.add(body["newschema"])
    if body.get("objectType") in (
        "OBJECT_TABLE",
        "OBJECT_VIEW",
        "OBJECT_MATVIEW",
        "OBJECT_FOREIGN_TABLE",
    ):
        w.facts.moved.add(_qualified(body.get("relation")))
    w.walk_fields(body)


def _h_rename(w: Walker, body: dict[str, Any]) -> None:
    """ALTER TABLE/VIEW ... RENAME [COLUMN]: the renamed column (or, for the relation
    itself, all its columns) is recorded as a column the statement touches, so the
    policy can refuse moving a column out from under a column mask rule."""
    w.add_kind("rename")
    relation = body.get("relation")
    rename_type = body.get("renameType")
    if isinstance(relation, dict) and relation.get("relname"):
        schema = relation.get("schemaname")
        table = f"{schema}.{relation['relname']}" if schema else relation["relname"]
        if rename_type == "OBJECT_COLUMN" and body.get("subname"):
            w.facts.columns.add((table, body["subname"]))
        elif rename_type in (
            "OBJECT_TABLE",
            "OBJECT_VIEW",
            "OBJECT_MATVIEW",
            "OBJECT_FOREIGN_TABLE",
        ):
            w.facts.columns.add((table, "*"))
    elif rename_type == "OBJECT_SCHEMA" and body.get("subname"):
        # every table in it, as "<schema>.*" (see ruled_rename)
        w.facts.columns.add((f"{body['subname']}.*", "*"))
        # and for rules naming the schema or its tables: after `ALTER SCHEMA hr RENAME TO
        # hx`, `SELECT * FROM hx.pay` no longer matches a rule on `hr.pay` or schema `hr`
        w.facts.schemas.add(body["subname"])
        w.facts.tables.add((body["subname"], "*"))
    w.walk_fields(body)


HANDLERS = {
    "SelectStmt": _h_select,
    "RenameStmt": _h_rename,
    "AlterObjectSchemaStmt": _h_alter_object_schema,
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
    "DeclareCursorStmt": _h_declare_cursor,
    "FetchStmt": _h_fetch,
    "ClosePortalStmt": _h_close_portal,
    "DoStmt": _h_do,
    "CreateFunctionStmt": _h_create_function,
    "CreateTrigStmt": _h_trigger,
    "ViewStmt": _h_view,
    "RuleStmt": _h_rule,
    "CreateEventTrigStmt": _h_trigger,
    "DefineStmt": _h_define,
    "CreateExtensionStmt": _h_extension,
    "CallStmt": _h_call,
    "AlterRoleSetStmt": _h_setting_holder("alter_role"),
    "AlterDatabaseSetStmt": _h_setting_holder("alter_database"),
    "AlterDefaultPrivilegesStmt": _h_default_privileges,
    "ObjectWithArgs": _h_object_with_args,
    "ColumnRef": _h_column_ref,
    "FuncCall": _h_func_call,
    "RangeVar": _h_range_var,
    "TransactionStmt": _h_transaction,
    "A_Const": _h_constant,
    "String": _h_constant,
}
