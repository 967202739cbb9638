"""Which column under a column rule a statement reads, from the policy's own facts.

Shared by the policy (a statement that reads a ruled column and writes elsewhere copies
the value out from under its rule: refused) and the gateway's masker planning (a result
column whose source is unknown or computed is masked as the ruled column it may carry).
"""

from __future__ import annotations

import fnmatch

__all__ = ["ruled_column_read"]


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
        for pattern in patterns:
            t_pat, _, c_pat = pattern.rpartition(".")
            # an unqualified column in a statement over several tables: any table (fail closed)
            t_ok = (
                not t_pat
                or t_pat == "*"
                or not table
                or fnmatch.fnmatchcase(table, t_pat)
                or fnmatch.fnmatchcase(bare_table, t_pat)
            )
            if not t_ok:
                continue
            if column == "*":
                return (table, c_pat)
            if fnmatch.fnmatchcase(column, c_pat):
                return (table, column)
    return None
