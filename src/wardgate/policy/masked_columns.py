"""Which column under a column rule a statement reads, from the policy's own facts.

Shared by the policy (a statement that reads a ruled column and writes elsewhere copies
the value out from under its rule: refused) and the gateway's masker planning (a result
column whose source is unknown or computed is masked as the ruled column it may carry).
"""

from __future__ import annotations

import fnmatch

__all__ = ["ruled_column_read", "ruled_rename"]

# the row records of a trigger function: bound to whichever table a trigger names later
_TRIGGER_ROWS = frozenset({"new", "old"})


def ruled_column_read(masks: tuple, objects: list[str]) -> tuple[str, str] | None:
    """(table, column) of a column the statement reads that a column rule covers."""
    patterns = [p.lower() for m in masks for p in (getattr(m, "columns", ()) or ())]
    if not patterns:
        return None
    for obj in objects:
        if not obj.startswith("column:"):
            continue
        table, _, column = obj[7:].lower().rpartition(".")
        bare_table = table.rpartition(".")[2]
        if bare_table in _TRIGGER_ROWS:
            table = bare_table = ""  # NEW.x / OLD.x in a trigger function: any table's row
        for pattern in patterns:
            t_pat, _, c_pat = pattern.rpartition(".")
            # an unqualified column in a statement over several tables: any table (fail
            # closed). A rule naming the schema (`public.t.ssn`) matches by the bare table
            # too: the statement's columns carry no schema, and an unqualified `t` may be
            # that table through the search_path
            t_ok = (
                not t_pat
                or t_pat == "*"
                or not table
                or fnmatch.fnmatchcase(table, t_pat)
                or fnmatch.fnmatchcase(bare_table, t_pat)
                or fnmatch.fnmatchcase(bare_table, t_pat.rpartition(".")[2])
            )
            if not t_ok:
                continue
            if column == "*":
                return (table, c_pat)
            if fnmatch.fnmatchcase(column, c_pat):
                return (table, column)
    return None


def ruled_rename(masks: tuple, objects: list[str]) -> tuple[str, str] | None:
    """(table, column) of a column rule a RENAME would slip out of: a renamed column a
    rule covers; a renamed table a rule names by its table (`t.ssn`; a rule for `*.ssn`
    still holds after the table's rename); a renamed schema a rule names (`s.t.ssn`).
    Tables are also compared by bare name, since the statement may name the table
    without its schema (fail closed)."""
    patterns = [p.lower() for m in masks for p in (getattr(m, "columns", ()) or ())]
    for obj in objects:
        kind, _, name = obj.lower().partition(":")
        if kind != "column":
            continue
        table, _, column = name.rpartition(".")
        if table.endswith(".*"):  # a renamed schema: every table in it
            schema = table[:-2]
            for pattern in patterns:
                t_pat, _, c_pat = pattern.rpartition(".")
                s_pat, dot, _ = t_pat.rpartition(".")
                if dot and s_pat != "*" and fnmatch.fnmatchcase(schema, s_pat):
                    return (t_pat, c_pat)
            continue
        bare_table = table.rpartition(".")[2]
        for pattern in patterns:
            t_pat, _, c_pat = pattern.rpartition(".")
            named = bool(t_pat) and t_pat != "*"
            t_ok = (
                fnmatch.fnmatchcase(table, t_pat)
                or fnmatch.fnmatchcase(bare_table, t_pat.rpartition(".")[2])
                if named
                else True
            )
            if column == "*":  # the table itself: only rules that name it
                if named and t_ok:
                    return (table, c_pat)
            elif t_ok and fnmatch.fnmatchcase(column, c_pat):
                return (table, column)
    return None
