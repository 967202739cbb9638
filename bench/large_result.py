"""Case 3: one large result (1,000,000 rows x 10 columns) through each path.

Theory of operation
-------------------
Two tables with the same row count are created directly on the target:

* `bench_pii` mixes ints and text, and its text looks like PII (emails, phone numbers,
  card-like digit runs, names): the baseline masking of the gateway applies to it
  ("masking on").
* `bench_ints` has ten integer columns: no masking directive can apply to an integer
  column, so the gateway's masker plan is empty for it ("masking off"). The baseline
  policy has no switch that turns masking off (masking always applies, by design), so
  this is how "off" is measured.

The client is pgbench with a one-statement script (`SELECT * FROM t`), run with `-t N`
on one connection: libpq reads the whole result in C, so the client is not the
bottleneck. The per-transaction latency comes from pgbench's log. MB/s is the exact
size of the result on the wire (every DataRow: type, length, column count, and per
column a length and the text value, computed in SQL) over that latency. While it runs,
a sampler thread reads the proxy's resident set size every 50 ms; the peak and the
value before the run are reported.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Rig, Target, pid_rss_kb

__all__ = ["LargeResult", "create_tables", "run_large", "TABLES"]

TABLES = {"masking on (text with PII)": "bench_pii", "masking off (int columns)": "bench_ints"}

_PII_SQL = """
DROP TABLE IF EXISTS bench_pii;
CREATE TABLE bench_pii AS
SELECT g AS id,
       (g * 7) % 100000 AS customer_no,
       'Customer ' || g AS full_name,
       'user' || g || '@example.com' AS email,
       '+1-555-' || lpad(((g * 37) % 10000)::text, 4, '0') AS phone,
       (g % 5000) AS store_id,
       CASE WHEN g % 10 = 0 THEN '4111 1111 1111 ' || lpad((g % 10000)::text, 4, '0')
            ELSE 'order note ' || md5(g::text) END AS note,
       (g * 13) % 1000 AS amount_cents,
       'Street ' || (g % 997) || ', Springfield' AS address,
       now()::date - (g % 3650) AS since
FROM generate_series(1, {rows}) AS g;
"""

_INTS_SQL = """
DROP TABLE IF EXISTS bench_ints;
CREATE TABLE bench_ints AS
SELECT g AS c1, g * 3 AS c2, g % 1000 AS c3, g * 7 AS c4, g % 97 AS c5,
       g + 1000000 AS c6, g % 13 AS c7, g * 11 AS c8, g % 5000 AS c9, g * 17 AS c10
FROM generate_series(1, {rows}) AS g;
"""


@dataclass
class LargeResult:
    target: str
    table: str
    seconds: float
    mb_per_s: float
    rss_before_mb: float
    rss_peak_mb: float


def create_tables(rig: Rig, rows: int) -> dict[str, int]:
    """Create both tables; returns each table's exact result size on the wire, in bytes."""
    rig.psql_app(_PII_SQL.format(rows=rows) + _INTS_SQL.format(rows=rows))
    rig.psql_app("VACUUM ANALYZE bench_pii")
    rig.psql_app("VACUUM ANALYZE bench_ints")
    sizes: dict[str, int] = {}
    for table in TABLES.values():
        cols = rig.psql_app(
            "SELECT string_agg(format('coalesce(octet_length(%I::text), 0)', attname), ' + ') "
            f"FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 "
            "AND NOT attisdropped"
        )
        ncols = int(
            rig.psql_app(
                f"SELECT count(*) FROM pg_attribute WHERE attrelid = '{table}'::regclass "
                "AND attnum > 0 AND NOT attisdropped"
            )
        )
        per_row_fixed = 1 + 4 + 2 + 4 * ncols
        sizes[table] = int(rig.psql_app(f"SELECT sum({per_row_fixed} + {cols}) FROM {table}"))
    return sizes


class _RssSampler(threading.Thread):
    def __init__(self, pid: int | None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            if self.pid:
                self.peak = max(self.peak, pid_rss_kb(self.pid))
            self._stop_evt.wait(0.05)

    def stop(self) -> int:
        self._stop_evt.set()
        self.join()
        return self.peak


def run_large(target: Target, table: str, wire_bytes: int, repeats: int = 1) -> LargeResult:
    with tempfile.TemporaryDirectory(prefix="wg-large-") as tmp:
        script = Path(tmp) / "big.sql"
        script.write_text(f"SELECT * FROM {table};\n")
        before = pid_rss_kb(target.pid) if target.pid else 0
        sampler = _RssSampler(target.pid)
        sampler.start()
        proc = subprocess.run(
            [
                "pgbench",
                "-n",
                "-c",
                "1",
                "-t",
                str(repeats),
                "-f",
                str(script),
                "--log",
                f"--log-prefix={tmp}/log",
            ],
            env=target.env(),
            capture_output=True,
            text=True,
        )
        time.sleep(0.1)
        peak = sampler.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"large result via {target.name}: {proc.stderr[-1500:]}")
        lat = []
        for f in Path(tmp).glob("log*"):
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat.append(int(parts[2]) / 1e6)
        if not lat:
            raise RuntimeError(f"large result via {target.name}: no transaction logged")
        secs = min(lat)
    return LargeResult(
        target.name,
        table,
        secs,
        wire_bytes / secs / 1e6,
        before / 1024,
        max(peak, before) / 1024,
    )
