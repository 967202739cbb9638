"""pgbench runs against one `Target`, with p99 latency from pgbench's own transaction log.

Theory of operation
-------------------
`run_pgbench` runs pgbench for a fixed time with `--log` (one line per transaction, the
latency in microseconds in the third column) into a temporary directory, then reads
every log file: TPS is the count of logged transactions over the measured time (the same
figure pgbench prints, "without initial connection time"), and the average and p99
latency are computed over every transaction, not a sample. With `-C` (a new connection
per transaction) the logged latency includes the connection set-up, and TPS is then new
connections per second.

`-n` (no vacuum) is always given: pgbench's own VACUUM is a statement the gateway's
baseline policy may refuse, and the tables are vacuumed directly before the runs.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Target

__all__ = ["PgbenchResult", "run_pgbench", "pgbench_init"]


@dataclass
class PgbenchResult:
    tps: float
    lat_avg_us: float
    lat_p50_us: float
    lat_p99_us: float
    transactions: int
    failed: int


def pgbench_init(target: Target, scale: int) -> None:
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), "--unlogged-tables"],
        env=target.env(),
        check=True,
        capture_output=True,
    )


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[k])


def run_pgbench(
    target: Target,
    *,
    clients: int,
    seconds: int,
    select_only: bool = True,
    mode: str = "simple",
    connect_each: bool = False,
    threads: int | None = None,
) -> PgbenchResult:
    threads = threads or min(clients, 2)
    with tempfile.TemporaryDirectory(prefix="wg-pgbench-") as tmp:
        prefix = str(Path(tmp) / "log")
        args = [
            "pgbench",
            "-n",
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(seconds),
            "-M",
            mode,
            "--log",
            f"--log-prefix={prefix}",
        ]
        if select_only:
            args.append("-S")
        if connect_each:
            args.append("-C")
        proc = subprocess.run(args, env=target.env(), capture_output=True, text=True)
        if proc.returncode not in (0, 2):
            raise RuntimeError(
                f"pgbench against {target.name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
            )
        latencies: list[int] = []
        failed = 0
        for f in Path(tmp).glob("log*"):
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) < 6:
                    continue
                if parts[2] in ("failed", "skipped"):
                    failed += 1
                    continue
                latencies.append(int(parts[2]))
        latencies.sort()
        m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", proc.stdout)
        if m is None:
            m = re.search(r"tps = ([\d.]+)", proc.stdout)
        tps = float(m.group(1)) if m else len(latencies) / max(seconds, 1)
        if proc.returncode == 2 or not latencies:
            raise RuntimeError(
                f"pgbench against {target.name}: errors during the run:\n{proc.stderr[-2000:]}"
            )
        return PgbenchResult(
            tps=tps,
            lat_avg_us=sum(latencies) / len(latencies),
            lat_p50_us=_percentile(latencies, 0.50),
            lat_p99_us=_percentile(latencies, 0.99),
            transactions=len(latencies),
            failed=failed,
        )
