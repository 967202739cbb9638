"""The audit writer in its own process (audit.writer: process): same evidence, same
durability contract, fails closed when the writer process is gone."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.conftest import start_gateway
from wardgate.audit.keys import load_keyring
from wardgate.audit.process_store import ProcessAuditStore
from wardgate.audit.records import StoreUnavailable
from wardgate.audit.verify import verify_store
from wardgate.testing.pgcluster import PgCluster


def _checkpoints(tmp_path: Path) -> dict[str, object]:
    return {
        "key_file": str(tmp_path / "cp.key"),
        "origin": "test.wardgate/log",
        "interval": 0.2,
        "publish": str(tmp_path / "published.txt"),
    }


async def test_appends_from_many_sessions_are_gapless_durable_and_verify(tmp_path: Path) -> None:
    store = await ProcessAuditStore.start(tmp_path / "a.db", checkpoints=_checkpoints(tmp_path))
    try:

        async def session(k: int) -> list[int]:
            seqs = []
            for i in range(50):
                rec = await store.append(
                    "command", session=f"s{k}", identity="ci", connection="db",
                    verdict="allow", rule="r", meta={"i": i}, payload=f"SELECT {i}".encode(),
                )  # fmt: skip
                assert rec.session == f"s{k}" and rec.meta == {"i": i}
                seqs.append(rec.seq)
            return seqs

        results = await asyncio.gather(*(session(k) for k in range(20)))
        seqs = sorted(s for r in results for s in r)
        assert seqs == list(range(1000))
        # the record handed back is what the store holds, byte for byte
        last = await store.append("note", meta={"x": "y"})
        stored = store.event(last.seq)
        assert stored is not None and stored.body == last.body
        assert store.size() == 1001
        # threads (approval decisions from the API's thread pool) append too
        rec = await asyncio.to_thread(store.append_sync, "approval_decided", meta={})
        assert rec.seq == 1001
        with pytest.raises(RuntimeError, match="event loop thread"):
            store.append_sync("x")
    finally:
        await store.aclose()
    keys = load_keyring(tmp_path / "cp.key").public_keys()
    report = verify_store(tmp_path / "a.db", keys, published=tmp_path / "published.txt")
    assert report.ok, report.failures
    assert report.events_total == 1002
    assert report.unsigned_tail == 0  # the writer process signed a final checkpoint


async def test_bad_fields_are_refused_at_the_call(tmp_path: Path) -> None:
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    try:
        with pytest.raises(TypeError):
            store.submit_async("command", sesion="typo")
        with pytest.raises(TypeError):
            store.submit_async("command", payload="text, not bytes")
        with pytest.raises(TypeError):  # raised by the writer process, same type here
            await store.append("command", meta={"x": object.__new__(object)})
        assert (await store.append("command", meta={})).seq == 0
    finally:
        await store.aclose()


async def test_writer_killed_fails_appends_closed_until_it_is_restarted(tmp_path: Path) -> None:
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    try:
        await store.append("command", meta={})
        pid = store.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(StoreUnavailable, match="audit writer process exited"):
            for _ in range(200):  # until the loss is noticed
                await store.append("command", meta={})
                await asyncio.sleep(0.01)
        with pytest.raises(StoreUnavailable):
            await store.append("command", meta={})
        fut = store.submit("command", meta={})  # the concurrent path fails at once too
        with pytest.raises(StoreUnavailable):
            fut.result(timeout=5)
        assert store.size() == 1  # reads still work: the committed event is there
        # a new writer process is started; appends work again once it is ready
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            try:
                rec = await store.append("command", meta={"after": "restart"})
                break
            except StoreUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "writer not restarted"
                await asyncio.sleep(0.05)
        assert rec.seq == 1  # nothing that failed was written
        assert store.writer_pid not in (None, pid)
    finally:
        await store.aclose()
    assert verify_store(tmp_path / "a.db", []).events_valid == 2


async def test_unusable_store_fails_at_start_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailable, match="audit store"):
        await ProcessAuditStore.start(blocker / "a.db")


async def test_close_from_another_thread_flushes(tmp_path: Path) -> None:
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    futs = [store.submit_async("command", meta={"i": i}) for i in range(100)]
    await asyncio.gather(*futs)
    await asyncio.to_thread(store.close)  # what `wardgate serve` did before aclose
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("select count(*) from events").fetchone()[0] == 100
    conn.close()


def test_gateway_fails_closed_while_its_writer_process_is_down(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, pg_cluster, extra={"audit": {"writer": "process"}})
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            assert conn.execute("select 41 + 1").fetchone() == (42,)
            children = psutil.Process(gw.proc.proc.pid).children()  # type: ignore[union-attr]
            writers = [c for c in children if "wardgate.audit.writer_process" in c.cmdline()]
            assert len(writers) == 1
            writers[0].kill()
            writers[0].wait(10)
            with pytest.raises(psycopg.Error) as info:
                for _ in range(50):
                    conn.execute("select 1")
                    threading.Event().wait(0.05)
            assert info.value.sqlstate == "58000"
            assert "wardgate: audit store unavailable" in str(info.value)
        # the gateway stays up, restarts its writer, and serves new sessions again
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(gw.dsn(), autocommit=True) as conn:
                    assert conn.execute("select 2").fetchone() == (2,)
                break
            except psycopg.Error as exc:
                assert "audit store unavailable" in str(exc)
                assert time.monotonic() < deadline, "the writer was not restarted"
                time.sleep(0.1)
        assert gw.proc.proc.poll() is None  # type: ignore[union-attr]
        assert "audit writer process restarted" in gw.proc.stderr
    finally:
        assert gw.proc.stop() == 0
    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "verify", "--config", str(gw.config)],
        capture_output=True, text=True, env={**os.environ, **gw.env}, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


async def test_result_events_linger_for_the_next_command_and_keep_their_order(
    tmp_path: Path,
) -> None:
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    try:
        # alone, a result event is still committed, a few milliseconds later
        alone = await asyncio.wait_for(store.append("result", meta={"n": 0}), 5)
        # a command right behind a result: the result is held for it (normally the two
        # share one group commit) and keeps its place before it
        res = store.submit_async("result", meta={"n": 1})
        await asyncio.sleep(0)  # the result leaves in its own frame
        cmd = await store.append("command", meta={"n": 2})
        res_rec = await res
        assert alone.seq == 0 and res_rec.seq == 1 and cmd.seq == 2
        assert res_rec.time <= cmd.time
    finally:
        await store.aclose()


async def test_every_event_of_interleaved_sessions_is_written(tmp_path: Path) -> None:
    """Frames mixing results (held) and commands (released at once) lose nothing: the
    relay's pattern, several sessions at a time, commands awaited and results not."""
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    results: list[asyncio.Future] = []
    try:

        async def session(k: int) -> None:
            for i in range(40):
                await store.append("command", session=f"s{k}", meta={"i": i})
                await asyncio.sleep(0.0001)
                results.append(store.submit_async("result", session=f"s{k}", meta={"i": i}))

        await asyncio.gather(*(session(k) for k in range(4)))
        recs = await asyncio.wait_for(asyncio.gather(*results), 10)
        assert len({r.seq for r in recs}) == 160
    finally:
        await store.aclose()
    conn = sqlite3.connect(tmp_path / "a.db")
    counts = dict(conn.execute("select kind, count(*) from events group by kind").fetchall())
    conn.close()
    assert counts == {"command": 160, "result": 160}


def _writer_child(gw) -> psutil.Process:  # type: ignore[no-untyped-def]
    children = psutil.Process(gw.proc.proc.pid).children()
    writers = [c for c in children if "wardgate.audit.writer_process" in c.cmdline()]
    assert len(writers) == 1
    return writers[0]


def test_sigterm_to_every_process_of_the_service_still_records_the_session_end(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    """systemd (KillMode=control-group) signals the gateway and its writer at once: the
    writer waits for the gateway, which ends and records its open sessions first."""
    gw = start_gateway(tmp_path, pg_cluster, extra={"audit": {"writer": "process"}})
    conn = psycopg.connect(gw.dsn(), autocommit=True)
    try:
        conn.execute("select 1")
        writer = _writer_child(gw)
        writer.send_signal(signal.SIGTERM)
        assert gw.proc.stop() == 0
        writer.wait(10)
    finally:
        conn.close()
    db = sqlite3.connect(tmp_path / "audit.db")
    kinds = [k for (k,) in db.execute("select kind from events order by seq")]
    db.close()
    assert kinds.count("session_start") == 1 and kinds.count("session_end") == 1


def test_writer_ends_in_order_when_the_gateway_is_killed(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, pg_cluster, extra={"audit": {"writer": "process"}})
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.execute("select 1")
    writer = _writer_child(gw)
    gw.proc.proc.kill()  # type: ignore[union-attr]
    gw.proc.proc.wait()  # type: ignore[union-attr]
    writer.wait(20)  # end of file on its link: flush, final checkpoint, exit (else timeout)
    published = tmp_path / "published-checkpoints.txt"
    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "verify", "--config", str(gw.config),
         "--published", str(published)],
        capture_output=True, text=True, env={**os.environ, **gw.env}, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not yet signed" not in r.stdout  # the writer signed what it had before exiting


async def test_command_events_get_their_seq_and_result_events_no_reply(tmp_path: Path) -> None:
    """The gateway's per-statement paths: a command's future resolves with its seq once
    durable; a result event keeps nothing pending here, and every event lands in order,
    the session's results before its session_end."""
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    try:
        for i in range(30):
            seq = await store.submit_seq(
                "command", "s1", "ci", "db", "allow", "r", {"i": i}, b"SELECT %d" % i
            )
            assert seq == 2 * i
            store.submit_nowait("result", "s1", "ci", "db", None, None, {"command_seq": seq}, None)
            assert not store._pending and not store._pending_records
        end = await store.append("session_end", session="s1", meta={})
        assert end.seq == 60
        kinds = [e.kind for e in store.events(session="s1")]
        assert kinds == ["command", "result"] * 30 + ["session_end"]
        result = store.event(1)
        assert result is not None and result.meta == {"command_seq": 0}
        command = store.event(0)
        assert command is not None and store.event_payload(0, command.payload_hash) == b"SELECT 0"
    finally:
        await store.aclose()
    assert verify_store(tmp_path / "a.db", []).events_valid == 61


async def test_results_sent_before_close_are_written(tmp_path: Path) -> None:
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    for i in range(500):
        store.submit_nowait("result", f"s{i % 7}", None, None, None, None, {"i": i}, b"rows")
    await store.aclose()
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("select count(*) from events").fetchone()[0] == 500
    conn.close()


async def test_an_event_the_link_cannot_carry_fails_alone(tmp_path: Path) -> None:
    """An event whose meta marshal refuses goes by pickle and is refused by the writer
    with the store's own TypeError; one nothing can encode fails at once; the events
    queued with it in the same loop turn are written either way."""

    store = await ProcessAuditStore.start(tmp_path / "a.db")
    try:
        before = store.submit_async("command", meta={"n": 1})
        # marshal refuses dict subclasses: the frame goes by pickle
        odd = store.submit_async("command", meta=collections.OrderedDict(n=2))
        unsendable = store.submit_async("command", meta={"f": lambda: None})
        after = store.submit_seq("command", None, None, None, None, None, {"n": 3}, None)
        with pytest.raises(TypeError):
            await unsendable
        assert (await odd).meta == {"n": 2}
        assert (await before).seq == 0 and await after == 2
    finally:
        await store.aclose()


async def test_checkpoints_are_signed_while_the_writer_idles(tmp_path: Path) -> None:
    """The checkpointer's jobs run on the writer's main thread, between commits: they
    must not wait for a frame from the gateway."""
    store = await ProcessAuditStore.start(tmp_path / "a.db", checkpoints=_checkpoints(tmp_path))
    try:
        await store.append("command", meta={})
        conn = sqlite3.connect(tmp_path / "a.db")
        deadline = time.monotonic() + 10
        while conn.execute("select count(*) from checkpoints").fetchone()[0] == 0:
            assert time.monotonic() < deadline, "no checkpoint signed while idle"
            await asyncio.sleep(0.05)
        conn.close()
    finally:
        await store.aclose()


async def test_a_lone_result_event_leaves_without_company(tmp_path: Path) -> None:
    """submit_nowait sends no frame of its own; with nothing else to ride with, the
    store's one timer sends it within milliseconds."""
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    try:
        store.submit_nowait("result", "s", None, None, None, None, {"n": 1}, None)
        assert store._out  # waiting for company
        deadline = time.monotonic() + 5
        while store.size() < 1:
            assert time.monotonic() < deadline, "the result event was never written"
            await asyncio.sleep(0.005)
        # with company it leaves in the same frame, ahead of the command queued after it
        store.submit_nowait("result", "s", None, None, None, None, {"n": 2}, None)
        seq = await store.submit_seq("command", "s", None, None, "allow", None, {}, None)
        assert seq == 2 and store.event(1).meta == {"n": 2}  # type: ignore[union-attr]
        # one that comes while the store's timer runs for an earlier one waits its own delay
        store.submit_nowait("result", "s", None, None, None, None, {"n": 3}, None)
        await asyncio.sleep(0.004)
        await store.submit_seq("command", "s", None, None, "allow", None, {}, None)
        store.submit_nowait("result", "s", None, None, None, None, {"n": 4}, None)
        deadline = time.monotonic() + 5
        while store.size() < 6:
            assert time.monotonic() < deadline, "the last result event was never written"
            await asyncio.sleep(0.002)
    finally:
        await store.aclose()


async def test_results_of_statements_running_while_the_writer_is_down_are_kept(
    tmp_path: Path,
) -> None:
    """Statements already forwarded keep running while the writer process is restarted;
    their result events are kept and written first by the new writer, not dropped."""
    store = await ProcessAuditStore.start(tmp_path / "a.db")
    try:
        await store.submit_seq("command", "s1", "ci", "db", "allow", "r", {}, b"SELECT 1")
        pid = store.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for _ in range(500):  # until the loss is noticed
            if not store.alive:
                break
            await asyncio.sleep(0.01)
        assert not store.alive
        for i in range(3):
            assert store.submit_nowait("result", "s1", "ci", "db", None, None, {"i": i}, b"1")
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            try:
                rec = await store.append("session_end", session="s1", meta={})
                break
            except StoreUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "writer not restarted"
                await asyncio.sleep(0.05)
        kinds = [(e.kind, e.meta.get("i")) for e in store.events()]
        assert kinds == [
            ("command", None),
            ("result", 0),
            ("result", 1),
            ("result", 2),
            ("session_end", None),
        ]
        assert rec.seq == 4
    finally:
        await store.aclose()
    assert verify_store(tmp_path / "a.db", []).events_valid == 5
