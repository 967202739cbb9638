"""What one `pgbench -S` statement costs in each stage of the gateway, in CPU time.

Theory of operation
-------------------
The same objects the relay uses (a real `Gateway` over a fresh SQLite store, the
baseline policy and masking) are driven in-process with the statement pgbench sends
(`SELECT abalance FROM pgbench_accounts WHERE aid = N;`, N varying) and the response
PostgreSQL gives it (RowDescription with one int4 column, one DataRow, CommandComplete).
Each stage runs N times and its CPU time (time.thread_time, so other load on the machine
does not count) is divided by N. The writer stage is the audit store's own thread:
appends are submitted in the relay's pattern (one command event waited for, one result
event not) and the time is the process CPU time of that loop minus the submitting side.

These are the stages of one statement on the loop thread, in order:
policy -> record command (masking of the text, JSON, the store's request) -> forward ->
response framing -> result plan (masker) -> row recording -> record result. The result
plan is made once per shape: the relay reuses a plan with no masker for the same
decision and RowDescription, which is the second "result plan" line (the first is the
cost of making one, paid once). The total counts the reused plan, not the first.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["measure_costs", "STATEMENT"]

STATEMENT = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"


def _gateway(directory: Path, durability: str) -> Any:
    from wardgate.audit.store import AuditStore
    from wardgate.config import parse_config
    from wardgate.pipeline.gateway import Gateway

    os.environ.setdefault("WG_BENCH_TOKEN", "tok-bench-0123456789abcdef")
    os.environ.setdefault("WG_BENCH_TARGET", "unused-password")
    cfg = parse_config(
        f"""
store: sqlite:///{directory / "audit.db"}
identities:
  - name: ci-bot
    token: env:WG_BENCH_TOKEN
    groups: [ci]
connections:
  - name: orders
    protocol: postgres
    listen: 127.0.0.1:0
    target: {{host: 127.0.0.1, port: 5432, database: orders, user: app,
              password: env:WG_BENCH_TARGET, tls: disable}}
audit: {{durability: {durability}}}
"""
    )
    store = AuditStore.open(cfg.store, durability=durability)
    return Gateway(cfg, store), store


def _response() -> tuple[bytes, bytes, bytes]:
    from wardgate.wire.pg import writers as w
    from wardgate.wire.pg.messages import Field

    field = Field("abalance", 16384, 3, 23, 4, -1, 0)
    rowdesc = w.row_description([field])
    row = w.data_row([b"0"])
    whole = rowdesc + row + w.command_complete("SELECT 1") + w.ready_for_query("I")
    return rowdesc, row[5:], whole


def _per_call(fn: Any, n: int) -> float:
    t = time.thread_time()
    for i in range(n):
        fn(i)
    return (time.thread_time() - t) / n * 1e6


def _reused_plan(gw: Any, info: Any, decision: Any, rowdesc_body: bytes, n: int) -> float:
    """The relay's `_prepare_result` when a plan for the same decision, RowDescription and
    formats is cached (the usual case for a repeated statement): needs a running loop."""
    import asyncio

    from wardgate.engines.postgres.relay import PgRelay, _Execution

    class _Transport:
        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

    async def run() -> float:
        relay = PgRelay(gw, info, _Transport(), _Transport(), budget=1 << 20)  # type: ignore[arg-type]
        fields = relay._fields(rowdesc_body)

        def prepare(_i: int) -> None:
            relay._prepare_result(_Execution("", decision), fields, ())

        prepare(0)
        return _per_call(prepare, n)

    return asyncio.run(run())


def measure_costs(quick: bool = False, n: int | None = None) -> dict[str, float]:
    """Stage -> microseconds of CPU per statement."""
    from wardgate.engines.postgres.results import ResultRecorder
    from wardgate.pipeline.command import SessionInfo
    from wardgate.wire.pg import backend as be
    from wardgate.wire.pg.framing import MessageReader

    n = n or (2000 if quick else 10000)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wg-costs-") as tmp:
        gw, store = _gateway(Path(tmp), "normal")
        try:
            info = SessionInfo(str(uuid.uuid4()), "ci-bot", ("ci",), "orders", "postgres", "x")
            policy = gw.policy_session(info)
            texts = [STATEMENT.format(i * 7919 % 100000) for i in range(n)]
            # warm the caches the way a long session would
            for t in texts[:50]:
                policy.evaluate(t, via="simple")
            decided: list[Any] = []
            out["policy (parse + decide)"] = _per_call(
                lambda i: decided.append(policy.evaluate(texts[i], via="simple")[0]), n
            )
            futures: list[Any] = []
            # warm the masker too (a compiled scanner is built on first use)
            for i in range(50):
                gw.record_command(*decided[i]).result()
            out["record command (mask text, JSON, enqueue)"] = _per_call(
                lambda i: futures.append(gw.record_command(*decided[i])), n
            )
            for f in futures:
                f.result()
            rowdesc, row_body, response = _response()
            row_raw = b"D" + (len(row_body) + 4).to_bytes(4, "big") + row_body
            fields = list(be.decode_row_description(rowdesc[5:]))
            reader = MessageReader()

            def frame(_i: int) -> None:
                reader.feed(response)
                while reader.next_message() is not None:
                    pass

            out["response framing (4 messages)"] = _per_call(frame, n)
            decision = decided[0][1]
            out["result plan (masker for 1 int column)"] = _per_call(
                lambda i: gw.result_masker(decision, fields, [0]), n
            )
            out["result plan, reused by the relay (same decision and shape)"] = _reused_plan(
                gw, info, decision, rowdesc[5:], n
            )
            recs: list[Any] = []

            def record_rows(_i: int) -> None:
                rec = ResultRecorder(1 << 20)
                rec.set_columns(["abalance"])
                rec.add_row(row_raw, row_body)
                recs.append(rec)

            out["row recording (1 row)"] = _per_call(record_rows, n)

            class _Ex:
                __slots__ = ("seq_future", "recorder", "masker")

            exs = []
            for i in range(n):
                ex = _Ex()
                ex.seq_future, ex.recorder, ex.masker = futures[i], recs[i], None
                exs.append(ex)
            out["record result (meta, payload, enqueue)"] = _per_call(
                lambda i: gw.record_result(info, exs[i], tag="SELECT 1", error=None, rows=1), n
            )
            # the writer thread: process CPU over a submit-and-wait loop, minus this thread
            m = n // 2
            p0, t0 = time.process_time(), time.thread_time()
            for i in range(m):
                gw.record_command(*decided[i]).result()
                gw.record_result(info, exs[i], tag="SELECT 1", error=None, rows=1)
            p1, t1 = time.process_time(), time.thread_time()
            out["audit writer thread (2 events, durability normal)"] = (
                ((p1 - p0) - (t1 - t0)) / m * 1e6
            )
        finally:
            store.close()
    out["total"] = sum(v for k, v in out.items() if not k.startswith("result plan (masker"))
    return out


if __name__ == "__main__":
    for k, v in measure_costs().items():
        print(f"{k:62s} {v:8.1f} us")
