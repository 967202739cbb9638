"""Process-wide counters, gauges and histograms, exposed as Prometheus text on `/metrics`.

Theory of operation: the hot path only adds to plain dicts keyed by a label tuple (a
dict increment, no locks: every writer runs on the event loop thread, and a reader
rendering a slightly stale figure is harmless). Gauges are either such dicts or
callbacks evaluated when the page is rendered (`gauge_source`: figures of the whole
gateway, such as the store's size, read once by the process that renders the page).
Labels never carry an identity, a statement or a value: only the connection name, the
verdict, the rule and entity names, which the configuration bounds, so neither
cardinality nor the page can leak what the record protects.

With `wardgate serve --workers N` every worker process has its own registry. A worker's
figures travel as a `snapshot()` (plain JSON data, taken by copying each dict, which
the interpreter lock makes atomic); `merge_snapshots` adds the workers' snapshots
together (counters and gauges by label set, histograms bucket by bucket) and
`render_prometheus(metrics, merged=...)` renders the merged figures in the registry's
order, as one page. worker_metrics.py collects the snapshots.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "METRICS",
    "Histogram",
    "Metrics",
    "count_masked",
    "merge_snapshots",
    "render_prometheus",
]

# {"name": {"kind", "help", "labels", "values": [[label values], value]} (+ "buckets")}
Snapshot = dict[str, dict[str, Any]]

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram(dict):
    """Observations by label tuple: each value is a list of per-bucket counts (not
    cumulative; the last is +Inf) followed by the sum of the observed values."""

    def __init__(self, buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        super().__init__()
        self.buckets = tuple(sorted(float(b) for b in buckets))

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.get(key)
        if row is None:
            row = self[key] = [0] * (len(self.buckets) + 1) + [0.0]
        i = 0
        for bound in self.buckets:  # a handful of bounds: a scan beats bisect's call
            if value <= bound:
                break
            i += 1
        row[i] += 1
        row[-1] += value


@dataclass
class _Family:
    name: str
    help: str
    kind: str  # "counter", "gauge" or "histogram"
    labels: tuple[str, ...]
    values: dict = field(default_factory=lambda: defaultdict(float))
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
        self.auth_blocked = self._counter(
            "wardgate_auth_blocked_total",
            "Connection attempts refused because their address had too many failed logins "
            "(auth_failure_limit), by connection.",
            ("connection",),
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
        return fam.values  # type: ignore[return-value]

    def _gauge(self, name: str, help_: str, labels: tuple[str, ...]) -> defaultdict:
        fam = self._families[name] = _Family(name, help_, "gauge", labels)
        return fam.values  # type: ignore[return-value]

    def histogram(
        self,
        name: str,
        help_: str,
        labels: tuple[str, ...],
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram family; `observe((label values...), seconds)` records a value."""
        hist = Histogram(buckets)
        self._families[name] = _Family(name, help_, "histogram", labels, values=hist)
        return hist

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

    def snapshot(self) -> Snapshot:
        """This process's counters, gauges and histograms as JSON data (gauge sources
        are left out: they describe the whole gateway and are read where rendered).
        Safe from another thread: each dict is copied in one C call."""
        out: Snapshot = {}
        for fam in list(self._families.values()):
            if fam.source is not None:
                continue
            items = fam.values.copy().items()
            entry: dict[str, Any] = {"kind": fam.kind, "help": fam.help, "labels": fam.labels}
            if isinstance(fam.values, Histogram):
                entry["buckets"] = fam.values.buckets
                entry["values"] = [[list(k), list(v)] for k, v in items]
            else:
                entry["values"] = [[list(k), v] for k, v in items]
            out[fam.name] = entry
        return out


def merge_snapshots(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several processes' snapshots: counters and gauges added by label set,
    histograms bucket by bucket (a histogram whose buckets differ from the first seen is
    left out: it cannot be added, and every worker runs the same code)."""
    merged: dict[str, dict[str, Any]] = {}
    sums: dict[str, dict[tuple[str, ...], Any]] = {}
    for snap in snapshots:
        for name, fam in snap.items():
            head = merged.get(name)
            if head is None:
                head = merged[name] = {k: v for k, v in fam.items() if k != "values"}
                sums[name] = {}
            elif head["kind"] != fam["kind"] or (
                fam["kind"] == "histogram"
                and tuple(head["buckets"]) != tuple(fam.get("buckets", ()))
            ):
                continue
            acc = sums[name]
            for key, value in fam["values"]:
                k = tuple(key)
                if fam["kind"] == "histogram":
                    row = acc.get(k)
                    if row is None:
                        acc[k] = list(value)
                    elif len(row) == len(value):
                        acc[k] = [a + b for a, b in zip(row, value, strict=True)]
                else:
                    acc[k] = acc.get(k, 0) + value
    for name, head in merged.items():
        head["values"] = [[list(k), v] for k, v in sums[name].items()]
    return merged


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _series(name: str, labels: Iterable[str], key: Iterable[Any], value: float) -> str:
    pairs = ",".join(f'{lb}="{_escape(str(v))}"' for lb, v in zip(labels, key, strict=True))
    return f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}"


def _render_family(
    out: list[str],
    name: str,
    help_: str,
    kind: str,
    labels: tuple[str, ...],
    items: Iterable[tuple[tuple[str, ...], Any]],
    buckets: tuple[float, ...] = (),
) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")
    for key, value in items:
        if kind != "histogram":
            out.append(_series(name, labels, key, value))
            continue
        total = 0
        for bound, n in zip((*buckets, float("inf")), value[:-1], strict=True):
            total += n
            le = "+Inf" if bound == float("inf") else _number(bound)
            out.append(_series(f"{name}_bucket", (*labels, "le"), (*key, le), total))
        out.append(_series(f"{name}_sum", labels, key, value[-1]))
        out.append(_series(f"{name}_count", labels, key, total))


def render_prometheus(
    metrics: Metrics,
    *,
    merged: Snapshot | None = None,
    extra: Iterable[tuple[str, str, str, tuple[str, ...], list]] = (),
) -> str:
    """Prometheus text exposition format 0.0.4: the registry's families in its order,
    with the figures of `merged` (several workers' sum) in place of its own if given,
    then the `extra` families (name, help, kind, labels, [(key, value)])."""
    out: list[str] = []
    for fam in metrics.families():
        items: Iterable[tuple[tuple[str, ...], Any]]
        buckets = tuple(getattr(fam.values, "buckets", ()))
        if fam.source is not None:
            try:
                items = list(fam.source())
            except Exception:  # noqa: BLE001 - a failing gauge must not break the page
                items = []
        elif merged is not None:
            snap = merged.get(fam.name)
            if snap is not None and snap["kind"] != fam.kind:
                continue
            values = snap["values"] if snap is not None else []
            items = sorted((tuple(k), v) for k, v in values)
        else:
            items = sorted(fam.values.items())
        _render_family(out, fam.name, fam.help, fam.kind, fam.labels, items, buckets)
    for name, snap in (merged or {}).items():  # a family this registry does not know
        if name not in metrics._families:
            items = sorted((tuple(k), v) for k, v in snap["values"])
            _render_family(
                out, name, snap["help"], snap["kind"], tuple(snap["labels"]), items,
                tuple(snap.get("buckets", ())),
            )  # fmt: skip
    for name, help_, kind, labels, items in extra:
        _render_family(out, name, help_, kind, labels, items)
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
