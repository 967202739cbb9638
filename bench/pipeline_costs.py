"""What one `pgbench -S` statement costs in each stage of the gateway, in CPU time.

Theory of operation
-------------------
The same objects the relay uses (a real `Gateway` over a fresh SQLite store, the
baseline policy and masking) are driven in-process, on a running uvloop as in the
gateway, with the statement pgbench sends (`SELECT abalance FROM pgbench_accounts WHERE
aid = N;`, N varying) and the response PostgreSQL gives it (RowDescription with one int4
column, one DataRow, CommandComplete). Each stage runs N times and its CPU time
(time.thread_time, so other load on the machine does not count) is divided by N.

The store is the one `wardgate serve` runs by default (`audit.writer: process`: the writer
in a child process) or, with `writer="thread"`, the writer thread of this process. The
last stages submit events in the relay's pattern (one command event waited for, one
result event not): "store link on the event loop" is the loop thread's time per
statement for that, minus the record stages (flushing requests, reading replies,
resolving futures, idle wake-ups), and the writer's line is the writer process's CPU
(from /proc) or, for a thread, the process CPU minus the loop thread.

These are the stages of one statement on the loop thread, in order:
policy -> record command (masking of the text, meta, payload, the store's request) ->
forward -> response framing -> result plan (masker) -> row recording -> record result.
The result plan is made once per shape: the relay reuses a plan with no masker for the
same decision and RowDescription, which is the second "result plan" line (the first is
the cost of making one, paid once). The total counts the reused plan, not the first.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import cpu_seconds

__all__ = ["measure_costs", "STATEMENT"]

STATEMENT = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"


async def _gateway(directory: Path, durability: str, writer: str) -> Any:
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
    if writer == "process":
        from wardgate.audit.process_store import ProcessAuditStore

        store = await ProcessAuditStore.start(cfg.store, durability=durability, checkpoints=None)
    else:
        store = AuditStore.open(cfg.store, durability=durability)
    return Gateway(cfg, store), store


async def _close(store: Any) -> None:
    aclose = getattr(store, "aclose", None)
    if aclose is not None:
        await aclose()
    else:
        store.close()


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
    formats is cached (the usual case for a repeated statement): on the running loop."""
    from wardgate.engines.postgres.relay import PgRelay, _Execution

    class _Transport:
        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

    relay = PgRelay(gw, info, _Transport(), _Transport(), budget=1 << 20)  # type: ignore[arg-type]
    fields = relay._fields(rowdesc_body)

    def prepare(_i: int) -> None:
        relay._prepare_result(_Execution("", decision), fields, ())

    prepare(0)
    return _per_call(prepare, n)


def measure_costs(
    quick: bool = False, n: int | None = None, writer: str = "process"
) -> dict[str, float]:
    """Stage -> microseconds of CPU per statement (`writer`: "process" or "thread")."""
    import uvloop

    return uvloop.run(_measure(quick, n, writer))


async def _measure(quick: bool, n: int | None, writer: str) -> dict[str, float]:
    import asyncio

    from wardgate.engines.postgres.results import ResultRecorder, columns_head
    from wardgate.pipeline.command import SessionInfo
    from wardgate.wire.pg import backend as be
    from wardgate.wire.pg.framing import MessageReader

    n = n or (2000 if quick else 10000)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wg-costs-") as tmp:
        gw, store = await _gateway(Path(tmp), "normal", writer)
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
                await gw.record_command(*decided[i])
            out["record command (mask text, meta, payload, store request)"] = _per_call(
                lambda i: futures.append(gw.record_command(*decided[i])), n
            )
            await asyncio.gather(*futures)
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
            # the columns and their payload line, made once per RowDescription by the relay
            names = ["abalance"]
            head = columns_head(names)

            def record_rows(_i: int) -> None:
                rec = ResultRecorder(1 << 20)
                rec.set_columns(names, head)
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
            record_result = "record result (meta, payload, store request)"
            out[record_result] = _per_call(
                lambda i: gw.record_result(info, exs[i], tag="SELECT 1", error=None, rows=1), n
            )
            await asyncio.sleep(0.2)  # the result events above are written
            # the relay's pattern: the command event waited for, the result event not
            m = n // 2
            pid = getattr(store, "writer_pid", None)
            p0, t0, w0 = time.process_time(), time.thread_time(), cpu_seconds(pid)
            for i in range(m):
                await gw.record_command(*decided[i])
                gw.record_result(info, exs[i], tag="SELECT 1", error=None, rows=1)
            await asyncio.sleep(0)
            p1, t1, w1 = time.process_time(), time.thread_time(), cpu_seconds(pid)
            loop_us = (t1 - t0) / m * 1e6
            out["store link on the event loop (flush, replies, futures, wake-ups)"] = max(
                0.0, loop_us - out["record command (mask text, meta, payload, store request)"]
                - out[record_result]
            )  # fmt: skip
            if pid is not None:
                out["audit writer process (2 events, durability normal)"] = (w1 - w0) / m * 1e6
            else:
                out["audit writer thread (2 events, durability normal)"] = (
                    ((p1 - p0) - (t1 - t0)) / m * 1e6
                )
        finally:
            await _close(store)
    out["total"] = sum(v for k, v in out.items() if not k.startswith("result plan (masker"))
    return out


if __name__ == "__main__":
    import sys

    for k, v in measure_costs(writer=sys.argv[1] if len(sys.argv) > 1 else "process").items():
        print(f"{k:66s} {v:8.1f} us")
