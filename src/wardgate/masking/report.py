"""The masking report: what was masked, per connection and column, from result summaries.

Theory of operation: every `result` event in the audit log carries, in
`meta["masking"]`, the `ResultMasker.summary()` of that result (or nothing when
no masker applied: no directive, or only types that cannot hold an entity).
`MaskingReport.add(connection, summary)` folds those summaries, one at a time
and in constant memory per column, into per-connection and per-column totals:
entity types found (each finding was replaced), values masked by a column rule
and under which rule and strategy, values turned into NULL, the rules in force,
and the rows scanned in the results where the column carried something. The
`results_unmasked` count per connection lists results that went out with no
masker at all, so an auditor can check that no column carrying regulated data
escaped masking. Pure: the CLI reads the store and renders the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ColumnTotals", "ConnectionTotals", "MaskingReport"]


@dataclass(slots=True)
class ColumnTotals:
    """What happened to one column (by name) of one connection's results."""

    entities: dict[str, int] = field(default_factory=dict)
    column_rules: dict[tuple[str, str], int] = field(default_factory=dict)  # (rule, strategy)
    nulled: int = 0
    results: int = 0
    rows_scanned: int = 0
    rules: set[str] = field(default_factory=set)

    @property
    def masked_values(self) -> int:
        return sum(self.entities.values()) + sum(self.column_rules.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "entities": dict(sorted(self.entities.items())),
            "masked_values": self.masked_values,
            "column_rules": [
                {"rule": rule, "strategy": strategy, "values": n}
                for (rule, strategy), n in sorted(self.column_rules.items())
            ],
            "nulled": self.nulled,
            "results": self.results,
            "rows_scanned": self.rows_scanned,
            "rules": sorted(self.rules),
        }


@dataclass(slots=True)
class ConnectionTotals:
    results: int = 0
    results_masked: int = 0
    results_unmasked: int = 0
    rows_scanned: int = 0
    rules: set[str] = field(default_factory=set)
    columns: dict[str, ColumnTotals] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "results_masked": self.results_masked,
            "results_unmasked": self.results_unmasked,
            "rows_scanned": self.rows_scanned,
            "rules": sorted(self.rules),
            "columns": {name: c.as_dict() for name, c in sorted(self.columns.items())},
        }


class MaskingReport:
    """Totals over many result summaries, per connection and column."""

    def __init__(self) -> None:
        self.connections: dict[str, ConnectionTotals] = {}
        self.malformed = 0

    def add(self, connection: str | None, summary: Any) -> None:
        """Fold one result's `meta["masking"]` (None or absent: no masker applied)."""
        conn = self.connections.setdefault(connection or "(none)", ConnectionTotals())
        conn.results += 1
        if summary is None:
            conn.results_unmasked += 1
            return
        if not isinstance(summary, dict):
            self.malformed += 1
            conn.results_unmasked += 1
            return
        conn.results_masked += 1
        rows = _int(summary.get("rows"))
        conn.rows_scanned += rows
        rules = {
            str(r.get("rule"))
            for r in summary.get("rules") or ()
            if isinstance(r, dict) and r.get("rule")
        }
        conn.rules |= rules
        touched: dict[str, ColumnTotals] = {}

        def column(name: str) -> ColumnTotals:
            c = touched.get(name)
            if c is None:
                c = touched[name] = conn.columns.setdefault(name, ColumnTotals())
            return c

        for name, counts in _dict(summary.get("columns")).items():
            c = column(name)
            for entity, n in _dict(counts).items():
                c.entities[entity] = c.entities.get(entity, 0) + _int(n)
        for name, rule in _dict(summary.get("column_rules")).items():
            rule = _dict(rule)
            key = (str(rule.get("rule", "?")), str(rule.get("strategy", "?")))
            c = column(name)
            c.column_rules[key] = c.column_rules.get(key, 0) + _int(rule.get("values"))
            c.rules.add(key[0])
        for name, n in _dict(summary.get("nulled")).items():
            column(name).nulled += _int(n)
        for c in touched.values():
            c.results += 1
            c.rows_scanned += rows
            c.rules |= rules

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": {name: c.as_dict() for name, c in sorted(self.connections.items())},
            "malformed_summaries": self.malformed,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}
