"""The relay's per-statement shortcuts, in process (fake transports, a real Gateway and
store): result plans reused only while they must give the same answer, masked results
never sharing a masker, command events byte for byte as before, and a batch released
exactly once when its events become durable on another thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wardgate.audit.store import AuditStore
from wardgate.config import parse_config
from wardgate.engines.postgres.relay import PgRelay
from wardgate.pipeline.command import Command, Decision, MaskDirective, SessionInfo, Verdict
from wardgate.pipeline.gateway import Gateway
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.messages import Field

TABLE_OID = 41000


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        if data:
            self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    os.environ["WG_HOT_PATH_TOKEN"] = "tok-hot-path-0123456789"
    os.environ["WG_HOT_PATH_TARGET"] = "unused"
    cfg = parse_config(
        f"""
store: sqlite:///{tmp_path / "audit.db"}
identities:
  - name: ci-bot
    token: env:WG_HOT_PATH_TOKEN
    groups: [ci]
policies:
  - name: p
    include: [baseline]
    rules:
      - name: hide-ssn
        verdict: mask
        mask: {{columns: ["*.ssn"], strategy: redact}}
connections:
  - name: orders
    protocol: postgres
    listen: 127.0.0.1:0
    policies: [p]
    target: {{host: 127.0.0.1, port: 5432, database: orders, user: app,
              password: env:WG_HOT_PATH_TARGET, tls: disable}}
audit: {{durability: normal}}
"""
    )
    store = AuditStore.open(cfg.store, durability="normal")
    try:
        yield Gateway(cfg, store)
    finally:
        store.close()


def _info() -> SessionInfo:
    return SessionInfo(str(uuid.uuid4()), "ci-bot", ("ci",), "orders", "postgres", "test", "hot")


def _int_result(value: int) -> bytes:
    field = Field("v", TABLE_OID, 2, 23, 4, -1, 0)  # an int4 column of table TABLE_OID
    return (
        w.row_description([field])
        + w.data_row([str(value).encode()])
        + w.command_complete("SELECT 1")
        + w.ready_for_query("I")
    )


async def _run(relay: PgRelay, agent: FakeTransport, target: FakeTransport, value: int) -> bytes:
    """One simple-protocol statement through the relay; returns what the agent got."""
    sent = len(target.writes)
    relay.agent_data(w.query("SELECT v FROM t"))
    for _ in range(2000):
        if len(target.writes) > sent:
            break
        await asyncio.sleep(0.001)
    assert len(target.writes) == sent + 1, "the statement never reached the target"
    got = len(agent.writes)
    relay.target_data(_int_result(value))
    return b"".join(agent.writes[got:])


def _rows(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos + 1 : pos + 5], "big")
        if data[pos : pos + 1] == b"D":
            out.append(data[pos + 5 : pos + 1 + size])
        pos += 1 + size
    return out


def _start(gateway: Gateway) -> tuple[PgRelay, FakeTransport, FakeTransport]:
    agent, target = FakeTransport(), FakeTransport()
    relay = PgRelay(gateway, _info(), agent, target, budget=1 << 20)  # type: ignore[arg-type]
    relay.start()
    return relay, agent, target


def test_a_reused_plan_follows_a_new_catalog_map(gateway: Gateway) -> None:
    async def main() -> list[list[bytes]]:
        relay, agent, target = _start(gateway)
        gateway.catalogs.put("orders", {(TABLE_OID, 2): ("public", "t", "nick")})
        first = _rows(await _run(relay, agent, target, 111))
        second = _rows(await _run(relay, agent, target, 222))
        # the same column now turns out to be t.ssn, under the column rule
        gateway.catalogs.put("orders", {(TABLE_OID, 2): ("public", "t", "ssn")})
        third = _rows(await _run(relay, agent, target, 333))
        relay.close("done")
        return [first, second, third]

    first, second, third = asyncio.run(main())
    assert first == [w.data_row([b"111"])[5:]]
    assert second == [w.data_row([b"222"])[5:]]  # no masker: passed as is, from the plan
    assert len(third) == 1 and b"333" not in third[0]


def test_masked_results_each_count_their_own_values(gateway: Gateway) -> None:
    async def main() -> list[bytes]:
        relay, agent, target = _start(gateway)
        gateway.catalogs.put("orders", {(TABLE_OID, 2): ("public", "t", "ssn")})
        rows = []
        for value in (101, 202, 303):
            rows += _rows(await _run(relay, agent, target, value))
        relay.close("done")
        return rows

    rows = asyncio.run(main())
    assert len(rows) == 3
    assert not any(str(v).encode() in r for v, r in zip((101, 202, 303), rows, strict=True))
    gateway.store.close()
    store = AuditStore.open(gateway.config.store, read_only=True)
    try:
        results = [e for e in store.events(kind="result")]
        commands = [e for e in store.events(kind="command")]
    finally:
        store.close()
    assert len(results) == 3
    # each result names its command (the loop future was read once done)
    assert [r.meta["command_seq"] for r in results] == [c.seq for c in commands]
    assert all(c.seq < r.seq for c, r in zip(commands, results, strict=True))
    summaries = [r.meta["masking"] for r in results]
    assert summaries[0] == summaries[1] == summaries[2]  # not accumulated across results
    assert summaries[0]["rows"] == 1
    assert summaries[0]["column_rules"]["ssn"]["values"] == 1


@pytest.mark.parametrize(
    "text,params",
    [
        ("SELECT 1", ()),
        ("SELECT \"quoted\", 'caf\u00e9 \u2603', E'\\n\t\x01'", ()),
        ("SELECT $1, $2, $3", ('a"b', None, "\u00e9\\")),
        ("", ()),
    ],
)
def test_command_payload_is_the_json_it_always_was(
    gateway: Gateway, text: str, params: tuple
) -> None:
    seen: list[dict] = []

    def submit(kind: str, **kw: Any) -> concurrent.futures.Future:
        seen.append(kw)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(None)
        return fut

    gateway.store.submit = submit  # type: ignore[method-assign]
    info = _info()
    decision = Decision(Verdict.ALLOW, "p/r", "because", facts={"kinds": ["select"]})
    for _ in range(2):  # the second time from the per-decision constants
        gateway.record_command(Command(info, text, params, 3, "simple"), decision, extra_key=1)
    expected = json.dumps({"text": text, "parameters": list(params)}, ensure_ascii=False)
    for kw in seen:
        assert kw["payload"] == expected.encode()
        assert kw["verdict"] == "allow" and kw["rule"] == "p/r"
        assert kw["meta"] == {
            "index": 3,
            "via": "simple",
            "reason": "because",
            "kinds": ["select"],
            "objects": [],
            "fingerprint": None,
            "application_name": "hot",
            "extra_key": 1,
        }


def test_a_batch_is_released_once_whatever_order_its_events_land_in(gateway: Gateway) -> None:
    """Several events in one batch, completed in random order from other threads
    (concurrent futures) and from the loop (loop futures), some already done when the
    relay looks: the batch reaches the target exactly once, after the last of them."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(7)
        for round_ in range(200):
            relay, agent, target = _start(gateway)
            n = rng.randint(1, 6)
            # concurrent futures (resolved on threads) and loop futures (the store's
            # submit_async), mixed in one batch
            futures: list[Any] = [
                concurrent.futures.Future() if rng.random() < 0.5 else loop.create_future()
                for _ in range(n)
            ]
            for fut in futures:
                if rng.random() < 0.3:
                    fut.set_result(None)
            relay._futures = list(futures)
            relay._batch = [(b"X" + round_.to_bytes(4, "big"), None)]
            relay._flush_batch()
            await asyncio.sleep(0)
            assert target.writes == [] or all(f.done() for f in futures)
            pending = [f for f in futures if not f.done()]
            rng.shuffle(pending)
            threads = [
                threading.Thread(target=f.set_result, args=(None,))
                for f in pending
                if isinstance(f, concurrent.futures.Future)
            ]
            for t in threads:
                t.start()
            for f in pending:
                if isinstance(f, asyncio.Future):
                    f.set_result(None)
                    await asyncio.sleep(0)
            for t in threads:
                t.join()
            for _ in range(1000):
                if target.writes:
                    break
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.002)
            assert target.writes == [b"X" + round_.to_bytes(4, "big")]
            assert not relay.busy
            relay.close("done")

    asyncio.run(main())


def _capture_payloads(gateway: Gateway) -> list[bytes]:
    payloads: list[bytes] = []

    def submit(kind: str, **kw: Any) -> concurrent.futures.Future:
        payloads.append(kw["payload"])
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(None)
        return fut

    gateway.store.submit = submit  # type: ignore[method-assign]
    return payloads


def test_a_statement_masked_for_the_record_is_remembered_per_text_and_mask_set(
    gateway: Gateway,
) -> None:
    """The same text under the same masks is masked once; another mask set (a mask rule
    adding IP addresses) masks it afresh and differently; the record is what masking the
    text each time gives."""
    payloads = _capture_payloads(gateway)
    real = gateway.masking.mask_text
    calls: list[str] = []

    def counting(text: str, directives: Any) -> tuple[str, dict]:
        calls.append(text)
        return real(text, directives)

    gateway.masking.mask_text = counting  # type: ignore[method-assign]
    info = _info()
    text = "SELECT * FROM t WHERE mail = 'ann@example.com' AND ip = '10.1.2.3'"
    plain = Decision(Verdict.ALLOW, "p/r", "x")
    more = Decision(
        Verdict.ALLOW, "p/ip", "x", masks=(MaskDirective("p/ip", entities=("IP_ADDRESS",)),)
    )
    plain_again = Decision(Verdict.ALLOW, "p/other", "y")  # another decision, same masks
    for decision in (plain, plain, more, more, plain_again):
        gateway.record_command(Command(info, text, (), 0, "parse"), decision)
    assert calls == [text, text]  # once per mask set
    texts = [json.loads(p)["text"] for p in payloads]
    assert texts[0] == texts[1] == texts[4] == real(text, gateway._masks_for(plain))[0]
    assert texts[2] == texts[3] == real(text, gateway._masks_for(more))[0]
    assert "ann@example.com" not in texts[0] and "10.1.2.3" in texts[0]
    assert "ann@example.com" not in texts[2] and "10.1.2.3" not in texts[2]


def test_the_masked_statement_memory_is_bounded(gateway: Gateway) -> None:
    from wardgate.pipeline import gateway as gateway_module

    payloads = _capture_payloads(gateway)
    info = _info()
    decision = Decision(Verdict.ALLOW, "p/r", "x")
    long_text = "SELECT '" + "x" * gateway_module._MASKED_TEXT_MAX + "'"
    gateway.record_command(Command(info, long_text, (), 0, "simple"), decision)
    assert not gateway._masked_texts  # too long to keep
    for i in range(gateway_module._MASKED_MAX + 10):
        gateway.record_command(Command(info, f"SELECT {i}", (), 0, "simple"), decision)
    assert 0 < len(gateway._masked_texts) <= gateway_module._MASKED_MAX
    assert json.loads(payloads[-1])["text"] == f"SELECT {gateway_module._MASKED_MAX + 9}"


class _Timer:
    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class _Clock:
    """The two loop methods the result delay uses, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Any, _Timer]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> _Timer:
        handle = _Timer()
        self.timers.append((self.now + delay, callback, handle))
        return handle

    def advance(self, to: float) -> None:
        """Move to `to`, firing (in order) the timers due by then."""
        while True:
            due = [t for t in self.timers if t[0] <= to and not t[2].cancelled()]
            if not due:
                break
            first = min(due, key=lambda t: t[0])
            self.timers.remove(first)
            self.now = first[0]
            first[1]()
        self.now = to


def test_a_result_event_waits_its_own_delay_whatever_timer_is_running(gateway: Gateway) -> None:
    """One timer per relay, kept across submissions: a result that finishes while the
    timer of an earlier (already submitted) result runs is still given its full
    RESULT_DELAY to share a commit with the next command, and no more."""
    from wardgate.engines.postgres.relay import RESULT_DELAY
    from wardgate.engines.postgres.responses import Execution
    from wardgate.engines.postgres.results import ResultRecorder

    async def main() -> tuple[list[tuple[str, float]], _Clock]:
        relay, _agent, _target = _start(gateway)
        clock = _Clock()
        relay.loop = clock  # type: ignore[assignment]
        submitted: list[tuple[str, float]] = []

        def record_result(info: Any, ex: Any, **kw: Any) -> None:
            submitted.append((ex.text, clock.now))

        gateway.record_result = record_result  # type: ignore[method-assign]
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)

        def finish(text: str) -> None:
            relay._finish(Execution(text, None, done, ResultRecorder(1024)), tag="SELECT 1")

        d = RESULT_DELAY
        finish("first")  # at 0: arms the timer, due at d
        clock.advance(0.2 * d)
        relay._submit_results()  # the next command takes it along; the timer stays
        clock.advance(0.4 * d)
        finish("second")  # while the first one's timer still runs: no second timer
        assert len(clock.timers) == 1
        clock.advance(d)  # the timer fires; "second" is 0.6 d old: it waits on
        assert submitted == [("first", 0.2 * d)]
        clock.advance(1.4 * d)
        finish("third")
        relay.close("done")  # submits what is left at once, and stops the timer
        clock.advance(10 * d)
        return submitted, clock

    submitted, clock = asyncio.run(main())
    d = RESULT_DELAY
    assert [text for text, _ in submitted] == ["first", "second", "third"]
    assert submitted[1][1] == pytest.approx(0.4 * d + d)  # its own full delay
    assert submitted[2][1] == pytest.approx(1.4 * d)  # at session end
    assert all(handle.cancelled() for _, _, handle in clock.timers)


def test_a_masked_result_records_its_own_columns_line(gateway: Gateway) -> None:
    """Masked results make a plan each time, but their columns line is made once per
    RowDescription: each payload still starts with the columns of its own result."""

    def result(name: str, value: bytes) -> bytes:
        field = Field(name, TABLE_OID, 2, 23, 4, -1, 0)
        return (
            w.row_description([field])
            + w.data_row([value])
            + w.command_complete("SELECT 1")
            + w.ready_for_query("I")
        )

    async def main() -> None:
        relay, agent, target = _start(gateway)
        gateway.catalogs.put("orders", {(TABLE_OID, 2): ("public", "t", "ssn")})
        for name in ("v", "v", "other", "v"):
            sent = len(target.writes)
            relay.agent_data(w.query("SELECT v FROM t"))
            for _ in range(2000):
                if len(target.writes) > sent:
                    break
                await asyncio.sleep(0.001)
            relay.target_data(result(name, b"123-45-6789"))
        relay.close("done")

    asyncio.run(main())
    gateway.store.close()
    store = AuditStore.open(gateway.config.store, read_only=True)
    try:
        heads = [
            json.loads((store.payload(e.payload_hash) or b"").split(b"\n")[0])
            for e in store.events(kind="result")
        ]
        masked = [
            e.meta["masking"]["column_rules"]["ssn"]["values"] for e in store.events(kind="result")
        ]
    finally:
        store.close()
    assert heads == [{"columns": [n]} for n in ("v", "v", "other", "v")]
    assert masked == [1, 1, 1, 1]
