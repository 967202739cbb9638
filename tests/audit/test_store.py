"""The SQLite audit store: group commit, gapless seq, proofs, failure modes."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.audit.canonical import EMPTY_ROOT, event_body, leaf_hash, sha256_hex
from wardgate.audit.group_commit import AppendRequest
from wardgate.audit.merkle import MemoryTree, verify_consistency, verify_inclusion
from wardgate.audit.store import AuditStore, StoreUnavailable, parse_store_url


@pytest.fixture
def store(tmp_path: Path):
    s = AuditStore.open(f"sqlite:///{tmp_path}/audit/log.db")
    yield s
    s.close()


json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
opt_text = st.none() | st.text(max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.text(min_size=1, max_size=20),
    session=opt_text,
    identity=opt_text,
    verdict=opt_text,
    meta=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    payload=st.none() | st.binary(max_size=50),
    seq=st.integers(0, 2**40),
)
def test_spliced_body_is_canonical_json(
    kind, session, identity, verdict, meta, payload, seq
) -> None:
    req = AppendRequest.build(
        kind, session=session, identity=identity, connection="pg", verdict=verdict, rule=None,
        meta=meta, payload=payload,
    )  # fmt: skip
    time_ = "2026-11-26T10:22:01.123456Z"
    fields = {
        "seq": seq, "time": time_, "session": session, "identity": identity, "connection": "pg",
        "kind": kind, "verdict": verdict, "rule": None,
        "payload_hash": sha256_hex(payload) if payload is not None else None, "meta": meta,
    }  # fmt: skip
    assert req.body(seq, f'"{time_}"'.encode()) == event_body(fields)
    # the positional constructor the gateway's hot path uses splices the same bytes
    made = AppendRequest.make(kind, session, identity, "pg", verdict, None, meta, payload)
    assert made.body(seq, f'"{time_}"'.encode()) == event_body(fields)


def test_url_forms(tmp_path: Path) -> None:
    assert parse_store_url("sqlite:///abs/x.db") == Path("/abs/x.db")
    assert parse_store_url("sqlite://rel/x.db") == Path("rel/x.db")
    assert parse_store_url("plain/x.db") == Path("plain/x.db")
    with pytest.raises(ValueError):
        parse_store_url("postgres://h/db")


async def test_concurrent_coroutines_get_gapless_seq(store: AuditStore) -> None:
    async def producer(p: int) -> list[int]:
        out = []
        for i in range(50):
            rec = await store.append("command", session=f"s{p}", identity="ci", verdict="allow",
                                     meta={"i": i}, payload=f"{p}:{i}".encode())  # fmt: skip
            out.append(rec.seq)
        return out

    results = await asyncio.gather(*(producer(p) for p in range(40)))
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(2000))
    for r in results:  # each producer's own events are in order
        assert r == sorted(r)
    assert store.size() == 2000
    recs = list(store.events())
    assert [r.seq for r in recs] == list(range(2000))
    assert all(r.body == event_body(r.fields()) for r in recs)
    times = [r.time for r in recs]
    assert times == sorted(times)


def test_threads_submit_and_append_sync(store: AuditStore) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            rec = store.append_sync("x")
            with lock:
                seqs.append(rec.seq)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    futs = [store.submit("y", meta={"n": n}) for n in range(200)]
    for t in threads:
        t.join()
    seqs += [f.result(timeout=10).seq for f in futs]
    assert sorted(seqs) == list(range(1000))


def test_tree_proofs_and_reopen(tmp_path: Path) -> None:
    url = str(tmp_path / "log.db")
    s = AuditStore.open(url)
    assert s.root() == EMPTY_ROOT
    recs = [s.append_sync("command", meta={"i": i}, payload=b"p%d" % i) for i in range(37)]
    mem = MemoryTree(leaf_hash(r.body) for r in recs)
    assert s.root() == mem.root()
    for size in (1, 2, 17, 32, 37):
        assert s.root(size) == mem.root(size)
    for seq in (0, 5, 31, 36):
        proof = s.inclusion_proof(seq)
        assert verify_inclusion(leaf_hash(recs[seq].body), seq, 37, proof, s.root())
    proof = s.consistency_proof(13, 37)
    assert verify_consistency(13, 37, proof, s.root(13), s.root(37))
    s.close()

    s = AuditStore.open(url)  # reopen: seq and tree continue
    assert s.size() == 37
    assert s.root() == mem.root()
    rec = s.append_sync("after_reopen")
    assert rec.seq == 37
    mem.append(leaf_hash(rec.body))
    assert s.root() == mem.root()
    s.close()

    ro = AuditStore.open(url, read_only=True)
    assert ro.size() == 38 and ro.root() == mem.root()
    with pytest.raises(StoreUnavailable):
        ro.append_sync("nope")
    ro.close()


def test_queries_payloads_sessions(store: AuditStore) -> None:
    store.append_sync("session_start", session="a", identity="ci-deployer", connection="prod",
                      meta={"client_addr": "10.0.0.1", "protocol": "postgres"})  # fmt: skip
    store.append_sync("session_start", session="b", identity="bot", connection="staging")
    cmd = store.append_sync("command", session="a", identity="ci-deployer", connection="prod",
                            verdict="deny", rule="p/r", payload=b'{"text":"DROP TABLE t"}')  # fmt: skip
    store.append_sync("command", session="a", identity="ci-deployer", connection="prod",
                      verdict="allow", payload=b'{"text":"SELECT 1"}')  # fmt: skip
    store.append_sync("session_end", session="a", identity="ci-deployer", connection="prod",
                      meta={"statements": 2, "reason": "client closed"})  # fmt: skip
    assert store.payload(cmd.payload_hash) == b'{"text":"DROP TABLE t"}'
    assert store.payload("0" * 64) is None
    assert store.event(cmd.seq) == cmd
    assert store.event(999) is None
    assert [e.seq for e in store.events(identity="ci-deployer")] == [0, 2, 3, 4]
    assert [e.seq for e in store.events(verdict="deny")] == [2]
    assert [e.seq for e in store.events(kind="session_start", connection="staging")] == [1]
    assert [e.seq for e in store.events(after_seq=2, limit=1)] == [3]
    assert list(store.events(since=cmd.time, until=cmd.time)) == []
    assert [e.seq for e in store.events(since=cmd.time)][0] == 2
    (a,) = store.sessions(identity="ci-deployer")
    assert (a.session, a.statements, a.denied, a.allowed, a.end_reason) == (
        "a",
        2,
        1,
        1,
        "client closed",
    )
    assert a.client_addr == "10.0.0.1" and a.ended is not None
    (b,) = store.sessions(connection="staging")
    assert b.ended is None and b.statements == 0


def test_bad_event_is_refused_at_submit(store: AuditStore) -> None:
    with pytest.raises(TypeError):
        store.submit("x", meta={"obj": object()})
    with pytest.raises(TypeError):
        store.submit("x", bogus=1)
    assert store.append_sync("ok").seq == 0


def test_closed_store_refuses(tmp_path: Path) -> None:
    s = AuditStore.open(tmp_path / "c.db")
    s.append_sync("one")
    s.close()
    s.close()
    with pytest.raises(StoreUnavailable):
        s.append_sync("two")
    with pytest.raises(StoreUnavailable):
        s.submit("two").result(timeout=1)


def test_full_disk_fails_promptly_and_keeps_seq_gapless(store: AuditStore) -> None:
    store.append_sync("before")
    pages = store.transact(
        lambda conn, _f: conn.execute("PRAGMA page_count").fetchone()[0]
    ).result()
    store.transact(lambda conn, _f: conn.execute(f"PRAGMA max_page_count={pages + 3}")).result()
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="full"):
        for _ in range(100):
            store.append_sync("big", payload=os.urandom(8192))
    assert time.monotonic() - t0 < 5
    ok_before = store.size()
    store.transact(lambda conn, _f: conn.execute("PRAGMA max_page_count=1073741823")).result()
    rec = store.append_sync("after")
    assert rec.seq == ok_before  # the failed batch consumed no seq
    assert [e.seq for e in store.events()] == list(range(ok_before + 1))
    mem = MemoryTree(leaf_hash(e.body) for e in store.events())
    assert store.root() == mem.root()


async def test_full_disk_fails_every_coroutine_in_batch(store: AuditStore) -> None:
    pages = store.transact(
        lambda conn, _f: conn.execute("PRAGMA page_count").fetchone()[0]
    ).result()
    store.transact(lambda conn, _f: conn.execute(f"PRAGMA max_page_count={pages + 2}")).result()
    results = await asyncio.wait_for(
        asyncio.gather(
            *(store.append("big", payload=os.urandom(4096)) for _ in range(50)),
            return_exceptions=True,
        ),  # fmt: skip
        timeout=5,
    )
    assert any(isinstance(r, StoreUnavailable) for r in results)
    good = sorted(r.seq for r in results if not isinstance(r, BaseException))
    assert good == list(range(len(good)))


def _make_immutable(path: Path) -> bool:
    if os.geteuid() != 0:
        path.chmod(0o444)
        return True
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def test_read_only_file_fails_promptly(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    s = AuditStore.open(db)
    s.append_sync("one")
    s.close()
    if not _make_immutable(db):
        pytest.skip("running as root and chattr +i unavailable: cannot make a read-only file")
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            s = AuditStore.open(db)
            try:
                s.append_sync("two")
            finally:
                s.close()
        assert time.monotonic() - t0 < 5
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], capture_output=True)


def test_cancelled_waiters_do_not_kill_the_writer(store: AuditStore) -> None:
    futs = [store.submit("x") for _ in range(200)]
    for f in futs[::2]:
        f.cancel()
    job = store.transact(lambda conn, _f: 1)
    job.cancel()
    assert store.append_sync("still alive").seq >= 100


def test_append_future_behaves_like_a_future() -> None:
    """AppendFuture only swaps the condition: waiting, wait(), as_completed, callbacks,
    cancellation and asyncio.wrap_future work as with concurrent.futures.Future."""
    import concurrent.futures as cf

    from wardgate.audit.group_commit import AppendFuture

    f = AppendFuture()
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.01)
    got: list[object] = []
    f.add_done_callback(lambda fut: got.append(fut.result()))
    waiter = threading.Thread(target=lambda: got.append(f.result(timeout=5)))
    waiter.start()
    time.sleep(0.05)  # the thread is now waiting on the condition
    threading.Timer(0.05, f.set_result, (42,)).start()
    done, pending = cf.wait([f, AppendFuture()], timeout=5, return_when=cf.FIRST_COMPLETED)
    waiter.join(5)
    assert done == {f} and len(pending) == 1 and got == [42, 42]
    assert list(cf.as_completed([f], timeout=1)) == [f]

    c = AppendFuture()
    assert c.cancel() and c.cancelled()
    assert not c.set_running_or_notify_cancel()
    with pytest.raises(cf.CancelledError):
        c.result()

    async def bridged() -> int:
        g = AppendFuture()
        asyncio.get_running_loop().call_later(0.01, g.set_result, 7)
        return await asyncio.wrap_future(g)

    assert asyncio.run(bridged()) == 7
    e = AppendFuture()
    e.set_exception(StoreUnavailable("x"))
    with pytest.raises(StoreUnavailable):
        e.result()


async def test_submit_async_resolves_in_the_loop(store: AuditStore) -> None:
    futs = [store.submit_async("x", meta={"n": n}, payload=b"%d" % n) for n in range(300)]
    assert not futs[-1].done()  # durable only after the writer's commit
    recs = await asyncio.gather(*futs)
    assert [r.seq for r in recs] == list(range(300))
    assert store.payload(recs[7].payload_hash) == b"7"
    store.close()
    with pytest.raises(StoreUnavailable):
        await store.submit_async("after close")
    with pytest.raises(RuntimeError):  # only from the loop's own thread
        await asyncio.to_thread(store.submit_async, "from a thread")


async def test_seq_and_nowait_paths_in_thread_mode(store: AuditStore) -> None:
    """`audit.writer: thread` serves the gateway's per-statement paths too."""
    seq = await store.submit_seq("command", "s", "ci", "db", "allow", "r", {"i": 1}, b"SQL")
    assert seq == 0
    store.submit_nowait("result", "s", "ci", "db", None, None, {"command_seq": seq}, b"rows")
    end = await store.append("session_end", session="s", meta={})
    assert end.seq == 2
    assert [e.kind for e in store.events(session="s")] == ["command", "result", "session_end"]
    assert store.event_payload(1, sha256_hex(b"rows")) == b"rows"


def test_the_writers_clock_formats_as_utc_now() -> None:
    import re

    from wardgate.audit.group_commit import _utc_now_fast, utc_now

    for _ in range(1000):
        a, b, c = utc_now(), _utc_now_fast(), utc_now()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", b)
        assert a <= b <= c
