"""docs/benchmarks.md from one run's samples (see bench/run.py for how they are made).

Theory of operation
-------------------
`write_doc` summarizes the samples (median, min-max per path), computes the ratios of
wardgate to direct and to PgBouncer from medians of the same run, checks the targets of
issue 6, draws docs/benchmarks-throughput.png, and writes the Markdown. Nothing here
runs a benchmark; the text around the tables states the method, so the page stands on
its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import Sample, Stat, fmt_ratio, fmt_stat, plot_throughput, ratio, summarize, table

__all__ = ["write_doc"]

PATHS = ("direct", "pgbouncer", "wardgate", "wardgate-normal", "wardgate-thread", "wardgate-2w")
GATEWAYS = ("wardgate", "wardgate-normal", "wardgate-thread", "wardgate-2w")
LABEL = {
    "direct": "direct",
    "pgbouncer": "PgBouncer",
    "wardgate": "wardgate (full)",
    "wardgate-normal": "wardgate (normal)",
    "wardgate-thread": "wardgate (full, writer thread)",
    "wardgate-2w": "wardgate (full, 2 workers)",
}


def _get(s: dict, case: str, params: tuple, target: str, metric: str) -> Stat | None:
    return s.get((case, params, target), {}).get(metric)


def _select_tables(s: dict, plan: Any) -> tuple[str, dict[str, dict[int, float]], list[tuple]]:
    parts: list[str] = []
    series: dict[str, dict[int, float]] = {}
    checks: list[tuple] = []
    for mode in ("simple", "prepared"):
        rows, lat_rows = [], []
        for clients in plan.clients:
            p = (mode, clients)
            d = _get(s, "select", p, "direct", "tps")
            b = _get(s, "select", p, "pgbouncer", "tps")
            for path in GATEWAYS:
                g = _get(s, "select", p, path, "tps")
                if g is None:
                    continue
                r_d, r_b = ratio(g, d), ratio(g, b)
                rows.append(
                    [
                        clients,
                        LABEL[path],
                        fmt_stat(d),
                        fmt_stat(b),
                        fmt_stat(g),
                        fmt_ratio(r_d),
                        fmt_ratio(r_b),
                        fmt_stat(_get(s, "select", p, path, "cpu_us_per_tx")),
                        fmt_stat(_get(s, "select", p, "pgbouncer", "cpu_us_per_tx")),
                    ]
                )
                if path == "wardgate" and r_d is not None:
                    series.setdefault(f"wardgate / direct ({mode})", {})[clients] = r_d
                if path == "wardgate" and r_b is not None:
                    series.setdefault(f"wardgate / PgBouncer ({mode})", {})[clients] = r_b
                if path == "wardgate" and mode == "simple":
                    r_bd = ratio(b, d)
                    if r_bd is not None:
                        series.setdefault("PgBouncer / direct (simple)", {})[clients] = r_bd
                if path == "wardgate" and clients == 8 and mode == "simple":
                    checks.append(
                        (
                            "pgbench -S, 8 clients: wardgate / direct TPS",
                            ">= 0.60",
                            r_d,
                            r_d is not None and r_d >= 0.60,
                        )  # fmt: skip
                    )
                    checks.append(
                        (
                            "pgbench -S, 8 clients: wardgate / PgBouncer TPS",
                            ">= 0.85",
                            r_b,
                            r_b is not None and r_b >= 0.85,
                        )  # fmt: skip
                    )
            for path in PATHS:
                if (("select", p, path)) not in s:
                    continue
                lat_rows.append(
                    [
                        clients,
                        LABEL[path],
                        fmt_stat(_get(s, "select", p, path, "lat_avg_us")),
                        fmt_stat(_get(s, "select", p, path, "lat_p50_us")),
                        fmt_stat(_get(s, "select", p, path, "lat_p99_us")),
                    ]
                )
            if clients == 1 and mode == "simple":
                d50 = _get(s, "select", p, "direct", "lat_p50_us")
                g50 = _get(s, "select", p, "wardgate", "lat_p50_us")
                if d50 and g50:
                    added = g50.median - d50.median
                    checks.append(
                        (
                            "pgbench -S, 1 client: added latency at the median",
                            "<= 60 us",
                            f"{added:,.0f} us",
                            added <= 60,
                        )  # fmt: skip
                    )
        parts.append(f"### `pgbench -S -M {mode}`: throughput (TPS)\n")
        parts.append(
            table(
                [
                    "clients",
                    "path",
                    "direct",
                    "PgBouncer",
                    "this path",
                    "/ direct",
                    "/ PgBouncer",
                    "proxy CPU us/tx",
                    "PgBouncer CPU us/tx",
                ],
                rows,
            )
        )
        parts.append(f"\n### `pgbench -S -M {mode}`: latency (us)\n")
        parts.append(table(["clients", "path", "average", "p50", "p99"], lat_rows))
        parts.append("")
    return "\n".join(parts), series, checks


def _simple_case(s: dict, case: str, params: tuple, metric: str, what: str) -> str:
    d = _get(s, case, params, "direct", metric)
    b = _get(s, case, params, "pgbouncer", metric)
    rows = []
    for path in PATHS:
        st = _get(s, case, params, path, metric)
        if st is None:
            continue
        rows.append(
            [
                LABEL[path],
                fmt_stat(st),
                fmt_ratio(ratio(st, d)),
                fmt_ratio(ratio(st, b)),
                fmt_stat(_get(s, case, params, path, "lat_avg_us")),
                fmt_stat(_get(s, case, params, path, "lat_p99_us")),
                fmt_stat(_get(s, case, params, path, "cpu_us_per_tx")),
            ]
        )
    return table(
        ["path", what, "/ direct", "/ PgBouncer", "latency avg us", "p99 us", "proxy CPU us/tx"],
        rows,
    )


def _large(s: dict, checks: list[tuple]) -> str:
    rows = []
    for key in sorted({k for k in s if k[0] == "large"}, key=lambda k: (k[1], PATHS.index(k[2]))):
        _, params, path = key
        label = params[0]
        st = s[key]
        d = _get(s, "large", params, "direct", "mb_per_s")
        r = ratio(st.get("mb_per_s"), d)
        rows.append(
            [
                label,
                LABEL[path],
                fmt_stat(st.get("seconds"), 2),
                fmt_stat(st.get("mb_per_s"), 1),
                fmt_ratio(r),
                fmt_stat(st.get("rss_before_mb")),
                fmt_stat(st.get("rss_peak_mb")),
            ]
        )
        if path == "wardgate" and "off" in label:
            checks.append(("large result, masking off: wardgate / direct MB/s", ">= 0.5", r,
                           r is not None and r >= 0.5))  # fmt: skip
        if path == "wardgate" and "on" in label.split()[1:2]:
            before, peak = st.get("rss_before_mb"), st.get("rss_peak_mb")
            if before and peak:
                grow = peak.median - before.median
                checks.append(("large result, masking on: gateway RSS growth", "flat (< 50 MB)",
                               f"{grow:,.0f} MB", grow < 50))  # fmt: skip
    return table(
        ["result", "path", "seconds", "MB/s", "/ direct", "proxy RSS before MB", "peak MB"], rows
    )


def _sessions(s: dict) -> str:
    rows = []
    for key in [k for k in s if k[0] == "sessions"]:
        _, (idle, active), path = key
        st = s[key]
        rows.append(
            [
                LABEL[path],
                idle,
                active,
                fmt_stat(st.get("open_seconds"), 1),
                fmt_stat(st.get("kb_per_session")),
                fmt_stat(st.get("tps")),
                fmt_stat(st.get("lat_p50_us")),
                fmt_stat(st.get("lat_p99_us")),
            ]
        )
    return table(
        [
            "path",
            "idle",
            "active",
            "open idle s",
            "proxy KiB / idle session",
            "active TPS",
            "p50 us",
            "p99 us",
        ],
        rows,
    )


def write_doc(out: Path, samples: list[Sample], info: dict, plan: Any, extra: dict) -> None:
    s = summarize(samples)
    checks: list[tuple] = []
    sel_md, series, sel_checks = _select_tables(s, plan)
    checks += sel_checks
    large_md = _large(s, checks)
    png = out.parent / "benchmarks-throughput.png"
    plotted = bool(series) and plot_throughput(
        png,
        series,
        "pgbench -S: throughput ratio (targets dashed: 0.60 of direct, 0.85 of PgBouncer)",
        "TPS ratio (medians, same run)",
        targets=(0.60, 0.85),
    )
    check_rows = [
        [what, target, r if isinstance(r, str) else fmt_ratio(r), "yes" if ok else "**no**"]
        for what, target, r, ok in checks
    ]
    md: list[str] = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run`); do not edit by hand, rerun it.",
        "Every figure is a median over rounds with the min-max in brackets; every ratio is",
        "between medians measured in the same run. wardgate runs with its defaults: the",
        'baseline policy, masking and recording on. "full" and "normal" are the audit',
        "store's durability (`audit: {durability: ...}`); full is the default and the",
        "headline.",
        "",
        "## Targets",
        "",
        table(["target", "wanted", "this run", "met"], check_rows),
        "",
        "## Machine and method",
        "",
        table(["", ""], [[k, v] for k, v in info.items()]),
        "",
        "- PostgreSQL: a throw-away cluster of its own (`PgCluster`: fsync off,",
        "  synchronous_commit off, shared_buffers 128MB), the same for all paths.",
        "- PgBouncer: session mode, SCRAM for clients and to the server, its own ini in a",
        "  temporary directory, run as the postgres user.",
        "- wardgate: `wardgate serve` as a subprocess (`GatewayProcess`), SQLite audit store",
        "  in a temporary directory on the same disk.",
        "- Every hop is plaintext TCP on 127.0.0.1 (pgbench `sslmode=disable`, PgBouncer",
        "  `server_tls_sslmode=disable`, wardgate target `tls: disable`), so the paths differ",
        "  by the proxy only.",
        f"- pgbench: {plan.seconds} s per run, {plan.rounds} rounds, paths in rotating order,",
        f"  scale {plan.scale}, `-n`, `-j 2` (1 for one client). Latency percentiles are",
        "  computed from pgbench's per-transaction log (`--log`), every transaction.",
        '- "proxy CPU us/tx" is the user + system CPU time of the proxy process during the',
        "  run (from /proc) divided by the transactions: unlike TPS it hardly moves with",
        "  other load on the machine.",
        "- pgbench, PostgreSQL, the proxy and everything else on the machine share its",
        "  cores: a proxy's CPU comes out of the same budget as the database's.",
        "",
        "## 1. `pgbench -S` (read-only point selects)",
        "",
        sel_md,
        "![throughput ratio](benchmarks-throughput.png)"
        if plotted
        else "_(no plot: matplotlib missing)_",
        "",
        "## 2. TPC-B-like (`pgbench`, writes), 8 clients",
        "",
        "Initialised with `pgbench -i` directly on the target (the baseline policy refuses",
        "pgbench's DROP/TRUNCATE through the gateway).",
        "",
        _simple_case(s, "tpcb", ("simple", 8), "tps", "TPS"),
        "",
        "## 3. Large result",
        "",
        "`SELECT *` of a table with the row count below and 10 columns, read by pgbench",
        "(libpq, one connection). MB/s is the exact size of the DataRows on the wire over",
        'the statement\'s latency. "masking on": ints and text with PII-looking values',
        '(emails, phones, card numbers, names), the baseline masking applies. "masking',
        'off": ten int columns, where no masking directive can apply; the policy has no',
        "switch that turns masking off (the baseline always applies, by design).",
        "",
        f"Rows: {plan.rows:,}; wire size: "
        + ", ".join(f"{t} {b / 1e6:,.1f} MB" for t, b in (extra.get("sizes") or {}).items())
        + "; rounds: "
        + ", ".join(f"{t} {n}" for t, n in plan.large_rounds.items())
        + ". The proxy's RSS is sampled every 50 ms during the statement.",
        "",
        large_md,
        "",
        "## 4. Connection churn (`pgbench -S -C`, 8 clients)",
        "",
        "A new connection per transaction: TPS here is new connections per second.",
        "",
        _simple_case(s, "churn", ("simple", 8), "tps", "connections/s"),
        "",
        f"## 5. {plan.idle + plan.active} concurrent sessions ({plan.active} active)",
        "",
        f"{plan.idle} idle sessions (asyncpg) stay open while pgbench `-S` runs with",
        f"{plan.active} clients. Memory per idle session is the proxy's RSS growth over",
        "the idle sessions (not reported for direct: that is a PostgreSQL backend); the",
        "gateway for this case is a fresh process, so the growth is not heap that earlier",
        "cases freed and these sessions reuse.",
        "",
        _sessions(s),
        "",
    ]
    costs = extra.get("costs")
    md += ["## 6. Where the time goes: one `pgbench -S` statement, stage by stage", ""]
    if isinstance(costs, dict):
        md += [
            "CPU time per statement of each stage, measured in-process on the real objects",
            "(bench/pipeline_costs.py; `time.thread_time`, so other load does not count).",
            "With the default `audit.writer: process` the writer's stage is CPU of the",
            "writer process, on another core than the event loop; with `audit.writer:",
            "thread` the two share one interpreter lock and their sum bounds throughput.",
            "",
            table(
                ["stage", "CPU us / statement"],
                [[k, f"{v:,.1f}"] for k, v in costs.items()],
            ),
            "",
        ]
    else:
        md += [f"_not measured: {extra.get('costs_error', 'skipped')}_", ""]
    diag = extra.get("diag")
    if diag:
        md += [
            "### The same gateway without its audit events (diagnostic)",
            "",
            "`python -m bench.diag_without_audit`: the gateway in this process (its writer",
            "process beside it), `pgbench -S`, durability normal, once as shipped and once",
            "with the store answering `command` and `result` events with an already-done",
            "future (nothing sent, written, hashed or woken). Not a configuration: it only",
            "shows what recording costs the live gateway, the link to the writer included.",
            "",
            "```",
            str(diag),
            "```",
            "",
        ]
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        md += [notes.read_text().strip(), ""]
    comps = extra.get("components") or {}
    if comps:
        md += ["## 7. Component benchmarks", ""]
        for name, text in comps.items():
            md += [f"### {name}", "", str(text), ""]
    if extra.get("failures"):
        md += ["## Cases that failed in this run", ""]
        md += [f"- {f}" for f in extra["failures"]]  # type: ignore[union-attr]
        md.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md).rstrip() + "\n")
