"""A statement with every constant replaced, by PostgreSQL's own parser.

Used for the record of a statement that names a column under a column mask rule: the
values such a statement carries (string literals in any spelling, dollar quotes, E''
strings, numbers) cannot be told apart from the covered column's by a pattern, so all
of them are replaced by `$n`, exactly as `pg_stat_statements` normalises queries. The
rest (keywords, names, comments, layout) stays as sent, so the record still says what
ran.
"""

from __future__ import annotations

from pglast.parser import ParseError, normalize

__all__ = ["without_constants"]


def without_constants(text: str) -> str | None:
    """`text` with each constant replaced by `$n`; None if it does not parse."""
    try:
        return normalize(text)
    except (ParseError, RecursionError, ValueError):
        return None
