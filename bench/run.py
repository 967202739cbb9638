"""`make bench`: wardgate against a direct connection and PgBouncer, written to docs/.

Theory of operation
-------------------
`python -m bench.run` starts everything it needs (`bench.harness.Rig`: a PostgreSQL
cluster of its own, PgBouncer in session mode, and two wardgate gateways, audit
durability "full" (the default, the headline) and "normal"), runs the cases, and writes
docs/benchmarks.md and docs/benchmarks-throughput.png. Paths run in alternation: each
round visits every path, and the order rotates from round to round, so a slow spell of
the machine does not land on one path only. Figures are medians over rounds with the
min-max; every ratio is between medians of this run.

Besides throughput and latency, each pgbench run records the CPU time the proxy
process used (user + system, from /proc) per transaction: on a shared machine the wall
clock figures move with other load, the CPU cost per transaction much less.

Cases: (1) `pgbench -S`, simple and prepared, 1/8/32 clients; (2) TPC-B-like at 8
clients; (3) a 1,000,000-row, 10-column result, masking on and off; (4) connection
churn (`pgbench -C`); (5) 500 sessions, 50 active; (6) the masking and audit component
benchmarks (bench/bench_masking.py, bench/bench_audit.py) when present; (7) what one
statement costs in each pipeline stage (bench/pipeline_costs.py), and the gateway run
once with its command/result events taken away (bench/diag_without_audit.py, a
diagnostic only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import Rig, Target, tree_cpu_seconds
from bench.large_result import TABLES, create_tables, run_large
from bench.pgbench_runs import pgbench_init, run_pgbench
from bench.report import Sample
from bench.sessions import run_sessions

__all__ = ["main", "Plan"]

ROOT = Path(__file__).resolve().parent.parent


class Plan:
    """Durations and sizes; `--quick` shrinks everything for a smoke run."""

    def __init__(self, quick: bool) -> None:
        self.seconds = 2 if quick else 4
        self.rounds = 1 if quick else 3
        self.clients = (1, 8) if quick else (1, 8, 32)
        self.scale = 2 if quick else 8
        self.rows = 100_000 if quick else 1_000_000
        # the masked table goes through the gateway ~20x slower than direct: one round
        self.large_rounds = {"bench_pii": 1, "bench_ints": 1 if quick else 3}
        self.idle = 90 if quick else 450
        self.active = 10 if quick else 50
        self.component_timeout = 120 if quick else 240


def _log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def _rotated(names: list[str], r: int) -> list[str]:
    k = r % len(names)
    return names[k:] + names[:k]


def _pgbench_sample(case: str, params: tuple, target: Target, r: int, **kw: object) -> Sample:
    c0 = tree_cpu_seconds(target.pid)
    res = run_pgbench(target, **kw)  # type: ignore[arg-type]
    c1 = tree_cpu_seconds(target.pid)
    metrics: dict[str, float] = {
        "tps": res.tps,
        "lat_avg_us": res.lat_avg_us,
        "lat_p50_us": res.lat_p50_us,
        "lat_p99_us": res.lat_p99_us,
    }
    if c0 is not None and c1 is not None and res.transactions:
        metrics["cpu_us_per_tx"] = (c1 - c0) * 1e6 / res.transactions
    _log(
        f"{case} {params} {target.name}: {res.tps:,.0f} tps, avg {res.lat_avg_us:,.0f} us, "
        f"p99 {res.lat_p99_us:,.0f} us"
    )
    return Sample(case, params, target.name, r, metrics)


def case_select(rig: Rig, plan: Plan, samples: list[Sample]) -> None:
    for mode in ("simple", "prepared"):
        for clients in plan.clients:
            names = ["direct", "pgbouncer", "wardgate"]
            if clients == 8:
                extra = ("wardgate-normal", "wardgate-thread", "wardgate-2w")
                names += [n for n in extra if n in rig.targets]
            for r in range(plan.rounds):
                for name in _rotated(names, r):
                    samples.append(
                        _pgbench_sample(
                            "select",
                            (mode, clients),
                            rig.targets[name],
                            r,
                            clients=clients,
                            seconds=plan.seconds,
                            mode=mode,
                        )
                    )


def case_tpcb(rig: Rig, plan: Plan, samples: list[Sample]) -> None:
    names = [n for n in ("direct", "pgbouncer", "wardgate", "wardgate-normal") if n in rig.targets]
    for r in range(plan.rounds):
        for name in _rotated(names, r):
            samples.append(
                _pgbench_sample(
                    "tpcb",
                    ("simple", 8),
                    rig.targets[name],
                    r,
                    clients=8,
                    seconds=plan.seconds,
                    select_only=False,
                )
            )


def case_churn(rig: Rig, plan: Plan, samples: list[Sample]) -> None:
    names = [n for n in ("direct", "pgbouncer", "wardgate", "wardgate-normal") if n in rig.targets]
    for r in range(plan.rounds):
        for name in _rotated(names, r):
            samples.append(
                _pgbench_sample(
                    "churn",
                    ("simple", 8),
                    rig.targets[name],
                    r,
                    clients=8,
                    seconds=plan.seconds,
                    connect_each=True,
                )
            )


def case_large(rig: Rig, plan: Plan, samples: list[Sample]) -> dict[str, int]:
    _log(f"creating the large-result tables ({plan.rows:,} rows)")
    sizes = create_tables(rig, plan.rows)
    names = [n for n in ("direct", "pgbouncer", "wardgate") if n in rig.targets]
    for label, table in TABLES.items():
        for r in range(plan.large_rounds[table]):
            for name in _rotated(names, r):
                res = run_large(rig.targets[name], table, sizes[table])
                _log(
                    f"large {table} {name}: {res.seconds:.2f} s, {res.mb_per_s:.1f} MB/s, "
                    f"rss {res.rss_before_mb:.0f} -> {res.rss_peak_mb:.0f} MB"
                )
                metrics = {"seconds": res.seconds, "mb_per_s": res.mb_per_s}
                if rig.targets[name].pid:
                    metrics |= {"rss_before_mb": res.rss_before_mb, "rss_peak_mb": res.rss_peak_mb}
                samples.append(Sample("large", (label, table), name, r, metrics))
    return sizes


def case_sessions(rig: Rig, plan: Plan, samples: list[Sample]) -> None:
    names = [n for n in ("direct", "pgbouncer", "wardgate") if n in rig.targets]
    for name in names:
        target = rig.targets[name]
        if name == "wardgate":
            # a fresh gateway process: its RSS growth is the sessions' memory, not heap
            # that earlier cases freed and these sessions would merely reuse
            target = rig.start_gateway("full", name="wardgate-fresh")
        try:
            res = run_sessions(target, idle=plan.idle, active=plan.active, seconds=plan.seconds)
        finally:
            if name == "wardgate":
                rig.stop_gateway("wardgate-fresh")
        _log(
            f"sessions {name}: opened {plan.idle} in {res.open_seconds:.1f} s, "
            f"{res.kb_per_idle_session} KiB/session, p99 {res.lat_p99_us:,.0f} us"
        )
        metrics = {
            "open_seconds": res.open_seconds,
            "tps": res.tps,
            "lat_p50_us": res.lat_p50_us,
            "lat_p99_us": res.lat_p99_us,
        }
        if res.kb_per_idle_session is not None:
            metrics["kb_per_session"] = res.kb_per_idle_session
        samples.append(Sample("sessions", (plan.idle, plan.active), name, 0, metrics))


def component_benches(plan: Plan, quick: bool) -> dict[str, str]:
    """Run bench_masking.py / bench_audit.py if present; their Markdown, or why not."""
    out: dict[str, str] = {}
    runs = {
        # accuracy on the full labelled set (5,000 per entity type, 5,000 look-alikes),
        # throughput on 100,000 rows
        "masking": [
            "bench/bench_masking.py",
            "--per-type",
            "500" if quick else "5000",
            "--rows",
            "100000",
            "--distinct",
            "5000",
        ],
        "audit": [
            "bench/bench_audit.py",
            "--events",
            "20000" if quick else "50000",
            "--verify-events",
            "50000" if quick else "100000",
            "--bundle-events",
            "10000" if quick else "20000",
            "--latency-seconds",
            "2" if quick else "3",
        ],
        "masking through the gateway": [
            "bench/masking_through_gateway.py",
            "--runs",
            "11" if quick else "31",
        ],
    }
    for name, args in runs.items():
        if not (ROOT / args[0]).exists():
            out[name] = f"_{args[0]} is not in this checkout._"
            continue
        _log(f"component benchmark: {' '.join(args)}")
        module = args[0].removesuffix(".py").replace("/", ".")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", module, *args[1:]],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=plan.component_timeout,
            )
        except subprocess.TimeoutExpired:
            out[name] = f"_`{' '.join(args)}` did not finish within {plan.component_timeout} s._"
            continue
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-3:]
            out[name] = f"_`{' '.join(args)}` failed: {' / '.join(tail)}_"
            continue
        text = "\n".join(
            ln for ln in proc.stdout.splitlines() if ln.startswith("|") or not ln.startswith(" ")
        ).strip()
        out[name] = f"`python {' '.join(args)}`\n\n{text}"
    return out


def without_audit(plan: Plan) -> str:
    """bench/diag_without_audit.py's lines, or why there are none."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.diag_without_audit", "--seconds", str(plan.seconds)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        return "_did not finish within 180 s_"
    if proc.returncode != 0:
        return "_failed: " + " / ".join(proc.stderr.strip().splitlines()[-2:]) + "_"
    return proc.stdout.strip()


def machine_info(rig: Rig) -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import uvloop

    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} cores, {cpu}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uvloop.__version__,
        "load_start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }
    info |= rig.versions()
    info["fdatasync"] = fsync_probe(rig.work)
    return info


def fsync_probe(directory: Path, n: int = 200) -> str:
    """What one fdatasync of a 4 KiB append costs on the store's disk: the floor of an
    audit.durability full group commit, so of the added latency of one statement."""
    import statistics

    path = directory / "fsync-probe"
    walls, cpus = [], []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            c, t = time.thread_time(), time.perf_counter()
            os.fdatasync(fd)
            walls.append(time.perf_counter() - t)
            cpus.append(time.thread_time() - c)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    walls.sort()
    return (
        f"p50 {walls[n // 2] * 1e6:,.0f} us, p99 {walls[int(n * 0.99)] * 1e6:,.0f} us, "
        f"CPU {statistics.mean(cpus) * 1e6:,.0f} us (4 KiB append, {n} calls)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (about 3 minutes)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument(
        "--skip",
        default="",
        help="comma list: select,tpcb,churn,large,sessions,costs,diag,components",
    )
    args = ap.parse_args(argv)
    plan = Plan(args.quick)
    skip = set(filter(None, args.skip.split(",")))
    started = time.monotonic()
    _log("starting PostgreSQL, PgBouncer and three gateways (full, normal, full + writer thread)")
    rig = Rig().start(("full", "normal"))
    # the default (audit.writer: process) against the writer in the gateway's own process
    rig.start_gateway(
        "full", name="wardgate-thread", audit={"durability": "full", "writer": "thread"}
    )
    rig.start_gateway("full", name="wardgate-2w", workers=2)  # `serve --workers 2`
    samples: list[Sample] = []
    extra: dict[str, object] = {}
    try:
        info = machine_info(rig)
        _log(f"pgbench -i -s {plan.scale} directly on the target")
        pgbench_init(rig.targets["direct"], plan.scale)
        rig.psql_app("VACUUM ANALYZE")
        steps = [
            ("select", lambda: case_select(rig, plan, samples)),
            ("tpcb", lambda: case_tpcb(rig, plan, samples)),
            ("churn", lambda: case_churn(rig, plan, samples)),
            ("sessions", lambda: case_sessions(rig, plan, samples)),
            ("large", lambda: extra.__setitem__("sizes", case_large(rig, plan, samples))),
        ]
        for name, step in steps:
            if name in skip:
                continue
            t = time.monotonic()
            try:
                step()
            except Exception as exc:  # one broken case must not lose the others
                _log(f"case {name} failed: {exc}")
                extra.setdefault("failures", []).append(f"{name}: {exc}")  # type: ignore[union-attr]
            _log(f"case {name} took {time.monotonic() - t:.0f} s")
    finally:
        rig.stop()
    if "costs" not in skip:
        from bench.pipeline_costs import measure_costs

        _log("pipeline stage costs (in-process, CPU time)")
        try:
            extra["costs"] = measure_costs(quick=args.quick)
        except Exception as exc:
            extra["costs_error"] = str(exc)
    if "diag" not in skip:
        _log("diagnostic: the gateway with and without its command/result events")
        extra["diag"] = without_audit(plan)
    if "components" not in skip:
        extra["components"] = component_benches(plan, args.quick)
    info["load_end"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    info["total"] = f"{time.monotonic() - started:.0f} s"
    from bench.write_doc import write_doc

    write_doc(args.out, samples, info, plan, extra)
    _log(f"wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
