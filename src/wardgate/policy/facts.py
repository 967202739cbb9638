"""What the classifier learns about one SQL statement.

Theory of operation: `classify.classify_statement` walks PostgreSQL's own parse tree
(pglast's JSON form) and fills a `StatementFacts`. Rules never look at SQL text
(except the opt-in `text_regex`); they look at these facts. Facts are pure functions of
the statement text, so they can be cached and shared between sessions; what depends on
the session (prepared statements, functions created earlier in the session) is merged in
afterwards by `PolicySession`.

`constant_sensitive` is set whenever the classifier consulted a literal value (a
constant-true WHERE, `set_config('role', ...)`, a DO or function body, a COPY file
name, ...). Only facts with `constant_sensitive == False` may be reused for a different
statement that differs from this one in constants alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "StatementFacts",
    "FEATURES",
    "FILE_FUNCTIONS",
    "ROLE_SETTINGS",
    "LARGE_OBJECT_FILE_FUNCTIONS",
    "SQL_STRING_FUNCTIONS",
    "NAMED_READ_FUNCTIONS",
    "VALUE_CATALOGS",
]

# Server-side file access (core and adminpack).
FILE_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_ls_replslotdir",
        "pg_ls_summariesdir",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_logdir_ls",
        "pg_file_read",
        "pg_file_length",
    }
)
LARGE_OBJECT_FILE_FUNCTIONS = frozenset({"lo_import", "lo_export"})
# Catalog views, tables and functions that show stored values without naming their
# column: planner statistics (most common values, histogram bounds of every column
# ANALYZE saw), other sessions' statement texts (with their literals; every gateway
# session logs in as the same target user) and logical decoding's row changes. Reading
# one counts as reading every column.
VALUE_CATALOGS = frozenset(
    {
        "pg_stats",
        "pg_stats_ext",
        "pg_stats_ext_exprs",
        "pg_statistic",
        "pg_statistic_ext_data",
        "pg_mcv_list_items",
        "pg_stat_activity",
        "pg_stat_get_activity",
        "pg_stat_get_backend_activity",
        "pg_stat_statements",
        # logical decoding: the rows every transaction wrote, any table's
        "pg_logical_slot_get_changes",
        "pg_logical_slot_peek_changes",
        "pg_logical_slot_get_binary_changes",
        "pg_logical_slot_peek_binary_changes",
    }
)
# Settings that change who the session acts as.
ROLE_SETTINGS = frozenset({"role", "session_authorization"})
# Functions that run a query given as a string: the string is parsed and classified.
SQL_STRING_FUNCTIONS: dict[str, tuple[int, ...]] = {
    "query_to_xml": (0,),
    "query_to_xmlschema": (0,),
    "query_to_xml_and_xmlschema": (0,),
    "ts_stat": (0,),
    "ts_rewrite": (1,),
    # tablefunc (a trusted extension: any role with CREATE on the database can add it)
    "crosstab": (0, 1),  # crosstab(source_sql [, category_sql | N])
    "crosstab2": (0,),
    "crosstab3": (0,),
    "crosstab4": (0,),
}
# Functions that read the rows of what their first argument names (a regclass or table
# name, a schema name, a cursor name) or of every table: recorded as if it were in FROM.
NAMED_READ_FUNCTIONS = {
    "table_to_xml": "table",
    "table_to_xmlschema": "table",
    "table_to_xml_and_xmlschema": "table",
    "schema_to_xml": "schema",
    "schema_to_xmlschema": "schema",
    "schema_to_xml_and_xmlschema": "schema",
    "database_to_xml": "database",
    "database_to_xmlschema": "database",
    "database_to_xml_and_xmlschema": "database",
    "cursor_to_xml": "cursor",
    "cursor_to_xmlschema": "cursor",
    "connectby": "table",  # tablefunc: connectby('hr.pay', 'id', 'parent', ...)
}

# Every feature the classifier can report, with a human-readable description.
FEATURES: dict[str, str] = {
    "file_access": "calls a server file access function",
    "large_object_file": "imports or exports a large object from a server file",
    "dblink": "opens a dblink connection",
    "foreign_server": "creates or uses a foreign server connection",
    "copy_program": "runs a server program through COPY ... PROGRAM",
    "copy_server_file": "reads or writes a server file through COPY",
    "copy_from": "COPY FROM (writes rows)",
    "copy_to": "COPY TO (reads rows)",
    "set_role": "changes the current role or session authorization",
    "superuser_role": "creates or alters a role with SUPERUSER",
    "bypassrls_role": "creates or alters a role with BYPASSRLS",
    "drop_column": "drops a column (ALTER TABLE ... DROP COLUMN)",
    "cascade": "drops objects with CASCADE",
    "dynamic_sql": "runs dynamic SQL that cannot be analysed before it runs",
    "unanalysable_body": "contains a body in a language or form that cannot be analysed",
    "native_function": "creates a function in C or internal language",
    "session_function": "calls a function created earlier in this session",
    "explain_analyze": "EXPLAIN ANALYZE runs the inner statement",
    "search_path": "changes search_path (unqualified names may then resolve anywhere)",
    "stored_search_path": "creates a function, procedure, rule or view that changes the "
    "search_path of a later session (the gateway cannot see it change there)",
    "lexer_setting": "turns standard_conforming_strings off (backslashes would then end string "
    "literals differently for the target than for the gateway's parser)",
    "client_encoding": "changes client_encoding away from UTF8 (the target would then read "
    "statement bytes differently from the gateway: SJIS, BIG5 and GBK can hide a quote)",
}


def is_on(value: str | None) -> bool:
    """PostgreSQL's spellings of a true boolean setting."""
    return value is not None and value.strip().strip("'\"").lower() in (
        "on",
        "true",
        "yes",
        "1",
        "t",
        "y",
    )


def is_utf8_name(value: str | None) -> bool:
    """PostgreSQL's spellings of UTF8 (a computed value is not known to be one)."""
    name = value.strip().strip("'\"").lower() if value is not None else ""
    return value is not None and name.replace("-", "").replace("_", "") in (
        "utf8",
        "unicode",
    )


@dataclass(slots=True)
class StatementFacts:
    """Facts about one statement, from its syntax tree (and those of nested bodies)."""

    kinds: set[str] = field(default_factory=set)
    features: set[str] = field(default_factory=set)
    # (schema or None, name)
    tables: set[tuple[str | None, str]] = field(default_factory=set)
    # (table or None, column); column "*" for a star
    columns: set[tuple[str | None, str]] = field(default_factory=set)
    functions: set[tuple[str | None, str]] = field(default_factory=set)
    schemas: set[str] = field(default_factory=set)
    # (table or None, column) read inside an UPDATE's SET values into ANOTHER column:
    # `UPDATE t SET nick = ssn` copies ssn
    copied: set[tuple[str | None, str]] = field(default_factory=set)
    # tables whose rows become readable under another table or schema: ALTER TABLE t
    # INHERIT p, ATTACH PARTITION t, ALTER TABLE t SET SCHEMA s ("schema.table" or table)
    moved: set[str] = field(default_factory=set)
    writes: bool = False
    reads: bool = False
    without_where: bool = False
    constant_sensitive: bool = False
    # why each feature was set ("pg_read_file() called", ...): evidence for reasons
    notes: list[str] = field(default_factory=list)
    # session-related: PREPARE name, EXECUTE name, DEALLOCATE name ("*" for ALL)
    prepares: str | None = None
    prepared_facts: StatementFacts | None = None
    executes: str | None = None
    deallocates: str | None = None
    # DECLARE name (its query's facts; WITH HOLD?), FETCH / MOVE name, CLOSE name ("*":
    # ALL), COMMIT / ROLLBACK / PREPARE TRANSACTION (cursors without HOLD end)
    declares: str | None = None
    cursor_facts: StatementFacts | None = None
    cursor_holds: bool = False
    fetches: str | None = None
    closes_cursor: str | None = None
    ends_transaction: bool = False
    # a PREPARE or DEALLOCATE anywhere, also inside a DO block or function body, or
    # dynamic SQL that might be one: what a prepared statement's name runs may have
    # changed without the session's top-level statements saying so
    touches_prepared: bool = False
    forgets_prepared: bool = False  # set by the session: the relay forgets its statements
    # CREATE FUNCTION / PROCEDURE name -> facts of its body
    creates_function: str | None = None
    function_body: StatementFacts | None = None
    fingerprint: str = ""
    kind: str = ""  # top-level kind

    def add_feature(self, feature: str, note: str) -> None:
        self.features.add(feature)
        if note not in self.notes:
            self.notes.append(note)

    def merge(self, other: StatementFacts) -> None:
        """Fold the facts of a nested statement or body into these."""
        self.kinds |= other.kinds
        self.features |= other.features
        self.tables |= other.tables
        self.columns |= other.columns
        self.functions |= other.functions
        self.schemas |= other.schemas
        self.copied |= other.copied
        self.moved |= other.moved
        self.writes |= other.writes
        self.reads |= other.reads
        self.without_where |= other.without_where
        self.constant_sensitive |= other.constant_sensitive
        self.touches_prepared |= other.touches_prepared
        for note in other.notes:
            if note not in self.notes:
                self.notes.append(note)

    def copy(self) -> StatementFacts:
        new = StatementFacts()
        new.merge(self)
        new.prepares, new.prepared_facts = self.prepares, self.prepared_facts
        new.executes, new.deallocates = self.executes, self.deallocates
        new.declares, new.cursor_facts = self.declares, self.cursor_facts
        new.cursor_holds, new.fetches = self.cursor_holds, self.fetches
        new.closes_cursor, new.ends_transaction = self.closes_cursor, self.ends_transaction
        new.forgets_prepared = self.forgets_prepared
        new.creates_function, new.function_body = self.creates_function, self.function_body
        new.fingerprint, new.kind = self.fingerprint, self.kind
        return new

    def objects(self) -> list[str]:
        out = [f"table:{s + '.' if s else ''}{n}" for s, n in sorted(self.tables, key=str)]
        out += [f"column:{t + '.' if t else ''}{c}" for t, c in sorted(self.columns, key=str)]
        out += [f"function:{s + '.' if s else ''}{n}" for s, n in sorted(self.functions, key=str)]
        out += [f"schema:{s}" for s in sorted(self.schemas)]
        return out

    def as_dict(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "kinds": sorted(self.kinds),
            "features": sorted(self.features),
            "objects": self.objects(),
            "writes": self.writes,
            "reads": self.reads,
            "without_where": self.without_where,
            "fingerprint": self.fingerprint,
        }
        if self.prepares is not None:  # a PREPARE the target refused is taken back
            out["prepares"] = self.prepares
        if self.deallocates is not None:  # the relay forgets the name once it ran
            out["deallocates"] = self.deallocates
        if self.executes is not None:  # a review shows what the name was prepared as
            out["executes"] = self.executes
        if self.declares is not None:  # ... and a protocol portal of a name now a cursor
            out["declares"] = self.declares
        if self.closes_cursor is not None:
            out["closes_cursor"] = self.closes_cursor
        if self.forgets_prepared:
            out["forgets_prepared"] = True
        return out
