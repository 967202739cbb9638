"""The built-in `baseline` policy.

Theory of operation: the baseline applies to every connection whose config names no
policies, and any policy can pull it in with `include: [baseline]` (or a connection can
list it next to others). It denies what is destructive or escapes the database, sends
mass changes and privilege changes to review, and allows the rest. A config may not
define its own policy called `baseline`.
"""

from __future__ import annotations

from wardgate.policy.model import PolicySpec, RuleSpec

__all__ = ["BASELINE_NAME", "baseline_policy"]

BASELINE_NAME = "baseline"


def _rule(name: str, verdict: str, reason: str, **match: object) -> RuleSpec:
    return RuleSpec(name=name, verdict=verdict, reason=reason, **match)  # type: ignore[arg-type]


def baseline_policy() -> PolicySpec:
    rules = [
        _rule("deny-drop-database", "deny", "DROP DATABASE", kinds=["drop_database"]),
        _rule("deny-drop-schema", "deny", "DROP SCHEMA", kinds=["drop_schema"]),
        _rule("deny-drop-table", "deny", "DROP TABLE", kinds=["drop_table"]),
        _rule("deny-drop-owned", "deny", "DROP OWNED drops tables", kinds=["drop_owned"]),
        _rule("deny-truncate", "deny", "TRUNCATE", kinds=["truncate"]),
        _rule("deny-alter-system", "deny", "ALTER SYSTEM", kinds=["alter_system"]),
        _rule(
            "deny-privileged-role",
            "deny",
            "a role with SUPERUSER or BYPASSRLS",
            features=["superuser_role", "bypassrls_role"],
        ),
        _rule("deny-copy-program", "deny", "COPY ... PROGRAM", features=["copy_program"]),
        _rule(
            "deny-copy-server-file",
            "deny",
            "COPY to or from a server file",
            features=["copy_server_file"],
        ),
        _rule(
            "deny-server-file-access",
            "deny",
            "server file or large-object file function",
            features=["file_access", "large_object_file"],
        ),
        _rule(
            "deny-foreign-connections",
            "deny",
            "dblink or foreign-server connection",
            features=["dblink", "foreign_server"],
        ),
        _rule("deny-set-role", "deny", "SET ROLE / SESSION AUTHORIZATION", features=["set_role"]),
        _rule(
            "deny-lexer-settings",
            "deny",
            "standard_conforming_strings off",
            features=["lexer_setting"],
        ),
        _rule(
            "deny-client-encoding",
            "deny",
            "client_encoding other than UTF8",
            features=["client_encoding"],
        ),
        _rule("deny-load", "deny", "LOAD of a shared library", kinds=["load"]),
        _rule(
            "review-without-where",
            "review",
            "DELETE or UPDATE without a WHERE clause",
            kinds=["delete", "update", "merge"],
            without_where=True,
        ),
        _rule(
            "review-drop-column", "review", "ALTER TABLE ... DROP COLUMN", features=["drop_column"]
        ),
        _rule("review-grant-revoke", "review", "GRANT or REVOKE", kinds=["grant", "revoke"]),
        _rule("review-drop-cascade", "review", "DROP ... CASCADE", features=["cascade"]),
        _rule("review-dynamic-sql", "review", "dynamic SQL", features=["dynamic_sql"]),
        _rule(
            "review-stored-search-path",
            "review",
            "stored code that changes a later session's search_path",
            features=["stored_search_path"],
        ),
        _rule(
            "review-unanalysable",
            "review",
            "code that cannot be analysed",
            features=["unanalysable_body", "native_function"],
        ),
    ]
    return PolicySpec(
        name=BASELINE_NAME,
        description="Built in: deny destructive and escaping statements, review mass changes.",
        rules=rules,
    )
