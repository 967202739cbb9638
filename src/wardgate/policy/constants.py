"""A statement with every constant replaced, by PostgreSQL's own parser.

Used for the record of a statement that names a column under a column mask rule: the
values such a statement carries (string literals in any spelling, dollar quotes, E''
strings, numbers) cannot be told apart from the covered column's by a pattern, so all
of them are replaced by `$n`, as `pg_stat_statements` normalises queries. The
rest (keywords, names, comments, layout) stays as sent, so the record still says what
ran.
"""

from __future__ import annotations

from pglast.parser import scan

__all__ = ["without_constants"]

# the scanner's constant tokens: 'x', E'x', U&'x', $$x$$, 12, 1.5, B'01', X'ff'
_CONSTANTS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})


def without_constants(text: str) -> str | None:
    """`text` with each constant replaced by `$n` (numbered after any `$n` already in
    it); None if it cannot be scanned (an unterminated quote).

    By PostgreSQL's own scanner, not its normaliser: `normalize` leaves the constants
    of most utility statements in place (PREPARE, EXECUTE, CREATE TABLE AS, CREATE VIEW,
    CREATE RULE...), and any statement can carry a covered value.
    """
    try:
        tokens = scan(text)
    except Exception:  # pglast raises its own errors for what it cannot scan
        return None
    # token offsets are character offsets into text, end inclusive
    n = 0
    for t in tokens:
        if t.name == "PARAM":
            try:
                n = max(n, int(text[t.start + 1 : t.end + 1]))
            except ValueError:
                pass
    out: list[str] = []
    pos = 0
    for t in tokens:
        if t.name in _CONSTANTS:
            n += 1
            out.append(text[pos : t.start])
            out.append(f"${n}")
            pos = t.end + 1
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)
