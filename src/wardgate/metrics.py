"""Process-wide counters and gauges, exposed as Prometheus text on the API's `/metrics`.

Theory of operation: the hot path only adds to plain dicts keyed by a label tuple (a
dict increment, no locks: every writer runs on the event loop thread, and a reader
rendering a slightly stale figure is harmless). Gauges are callbacks evaluated when
the page is rendered. Labels never carry an identity, a statement or a value: only
the connection name, the verdict, the rule and entity names, which the configuration
bounds, so neither cardinality nor the page can leak what the record protects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["METRICS", "Metrics", "count_masked", "render_prometheus"]


@dataclass
class _Family:
    name: str
    help: str
    kind: str  # "counter" or "gauge"
    labels: tuple[str, ...]
    values: defaultdict[tuple[str, ...], float] = field(default_factory=lambda: defaultdict(float))
    source: Callable[[], Iterable[tuple[tuple[str, ...], float]]] | None = None


class Metrics:
    """The families wardgate exposes; `METRICS` is the one the gateway process uses."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self.sessions = self._counter(
            "wardgate_sessions_total", "Agent sessions opened, by connection.", ("connection",)
        )
        self.sessions_refused = self._counter(
            "wardgate_sessions_refused_total",
            "Connection attempts refused before a session (authentication, unknown connection).",
            ("reason",),
        )
        self.active = self._gauge(
            "wardgate_sessions_active", "Agent sessions open now, by connection.", ("connection",)
        )
        self.statements = self._counter(
            "wardgate_statements_total",
            "Statements decided, by connection and verdict (allow, deny, review).",
            ("connection", "verdict"),
        )
        self.refusals = self._counter(
            "wardgate_statements_refused_total",
            "Statements denied or held, by the rule that decided.",
            ("connection", "verdict", "rule"),
        )
        self.masked = self._counter(
            "wardgate_masked_values_total",
            "Values masked in results, by connection and entity (or column rule).",
            ("connection", "entity"),
        )
        self.audit_failures = self._counter(
            "wardgate_audit_append_failures_total",
            "Events the audit store could not make durable (the statement was refused).",
            (),
        )

    def _counter(self, name: str, help_: str, labels: tuple[str, ...]) -> defaultdict:
        fam = self._families[name] = _Family(name, help_, "counter", labels)
        return fam.values

    def _gauge(self, name: str, help_: str, labels: tuple[str, ...]) -> defaultdict:
        fam = self._families[name] = _Family(name, help_, "gauge", labels)
        return fam.values

    def gauge_source(
        self,
        name: str,
        help_: str,
        labels: tuple[str, ...],
        source: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        """A gauge computed when rendered (store size, pending approvals); replaces any
        source registered under the same name (a restarted gateway in one process)."""
        self._families[name] = _Family(name, help_, "gauge", labels, source=source)

    def reset(self) -> None:
        for fam in self._families.values():
            fam.values.clear()

    def families(self) -> list[_Family]:
        return list(self._families.values())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_prometheus(metrics: Metrics) -> str:
    """Prometheus text exposition format 0.0.4."""
    out: list[str] = []
    for fam in metrics.families():
        out.append(f"# HELP {fam.name} {fam.help}")
        out.append(f"# TYPE {fam.name} {fam.kind}")
        items: Iterable[tuple[tuple[str, ...], float]]
        if fam.source is not None:
            try:
                items = list(fam.source())
            except Exception:  # noqa: BLE001 - a failing gauge must not break the page
                continue
        else:
            items = sorted(fam.values.items())
        for key, value in items:
            if fam.labels:
                pairs = ",".join(
                    f'{label}="{_escape(str(v))}"' for label, v in zip(fam.labels, key, strict=True)
                )
                out.append(f"{fam.name}{{{pairs}}} {_number(value)}")
            else:
                out.append(f"{fam.name} {_number(value)}")
    return "\n".join(out) + "\n"


METRICS = Metrics()


def count_masked(connection: str, summary: dict, metrics: Metrics | None = None) -> None:
    """Add a result's masking summary (`ResultMasker.summary()`) to the masked-values
    counter: entities found by content, and values replaced by a column rule."""
    masked = (metrics or METRICS).masked
    for found in (summary.get("columns") or {}).values():
        if isinstance(found, dict):
            for entity, n in found.items():
                if n:
                    masked[(connection, entity)] += n
    for info in (summary.get("column_rules") or {}).values():
        n = info.get("values", 0) if isinstance(info, dict) else info
        if isinstance(n, int) and n:
            masked[(connection, "column_rule")] += n
