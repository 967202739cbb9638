"""One bad or malicious agent against a real gateway: it must not grow the gateway's
memory without bound, and a well-behaved session keeps working meanwhile.

Memory is the gateway's own RSS (and its audit writer's), read from /proc while the bad
agent does its worst; each test starts a fresh gateway so earlier tests' garbage does
not count."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from tests.engines.postgres.test_robustness import _login, _read_until
from wardgate.testing.gateway_process import GatewayProcess, write_config
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.backend import decode_fields
from wardgate.wire.pg.framing import MessageReader

MiB = 1 << 20


def _rss(pid: int) -> int:
    """The gateway's RSS plus its children's (the audit writer)."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


class _Watch:
    """Peak RSS of the gateway, and a well-behaved session running queries meanwhile."""

    def __init__(self, gw: RunningGateway) -> None:
        self.pid = gw.proc.proc.pid  # type: ignore[union-attr]
        self.dsn = gw.dsn()
        self.base = _rss(self.pid)
        self.peak = self.base
        self.ok = 0
        self.slowest = 0.0
        self.errors: list[str] = []
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._bystander, daemon=True),
        ]

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, _rss(self.pid))
            except psutil.Error:
                pass
            time.sleep(0.05)

    def _bystander(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
                while not self._done.is_set():
                    t0 = time.monotonic()
                    assert conn.execute("select 'still here'").fetchone() == ("still here",)
                    self.slowest = max(self.slowest, time.monotonic() - t0)
                    self.ok += 1
                    time.sleep(0.1)
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))

    @property
    def growth(self) -> int:
        return self.peak - self.base

    def check(self, limit: int) -> None:
        assert not self.errors, self.errors
        # at least one query, none slower than 5 s: a flood of statements shares the one
        # audit writer, so the bystander's statements wait behind its events (about
        # 1 s each on an idle machine; 4 queries in 10 s, and 1 on a loaded one)
        assert self.ok >= 1, f"the well-behaved session ran only {self.ok} queries"
        assert self.slowest < 5, f"the well-behaved session waited {self.slowest:.1f}s"
        assert self.growth < limit, (
            f"gateway RSS grew by {self.growth / MiB:.0f} MiB (limit {limit / MiB:.0f})"
        )


@contextmanager
def _watching(gw: RunningGateway) -> Iterator[_Watch]:
    watch = _Watch(gw)
    for t in watch._threads:
        t.start()
    try:
        yield watch
    finally:
        watch._done.set()
        for t in watch._threads:
            t.join(15)


@pytest.fixture
def fresh(pg_cluster, tmp_path: Path) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path, pg_cluster)
    try:
        yield gw
    finally:
        gw.proc.stop()
    assert "Traceback" not in gw.proc.stderr, gw.proc.stderr[-3000:]


def _flood(sock: socket.socket, data: bytes, seconds: float) -> bool:
    """Send `data` over and over for `seconds`; True when the gateway stopped reading
    (a send blocked for 3 s), which is what a bounded gateway must do."""
    sock.settimeout(3)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.sendall(data)
    except TimeoutError:
        return True
    return False


@pytest.mark.parametrize(
    "query",
    [
        # long statements: what piles up is bytes waiting for the target
        "select repeat('x', 100000) -- " + "p" * 10000,
        # short ones: what piles up is per-statement state (one per statement in flight)
        "select repeat('x', 100000)",
    ],
    ids=["long-statements", "short-statements"],
)
def test_agent_that_pipelines_queries_and_never_reads_is_stopped_being_read(
    fresh: RunningGateway, query: str
) -> None:
    """The agent sends Query after Query and reads nothing back: the target's results
    back up, the target stops reading, and the gateway must stop reading the agent
    (DESIGN rule 4) instead of queueing what the agent sends."""
    sock, _ = _login(fresh.port)
    try:
        with _watching(fresh) as watch:
            blocked = _flood(sock, w.query(query) * 10, 20)
            time.sleep(1)
        assert blocked, "the gateway kept reading an agent that reads nothing"
        watch.check(120 * MiB)
    finally:
        sock.close()


def test_agent_that_never_reads_a_huge_result_holds_flat_memory(fresh: RunningGateway) -> None:
    sock, _ = _login(fresh.port)
    try:
        with _watching(fresh) as watch:
            sock.sendall(w.query("select g, repeat('r', 200) from generate_series(1, 50000000) g"))
            time.sleep(8)
        watch.check(60 * MiB)
    finally:
        sock.close()


def test_agent_that_repeats_a_local_setting_and_never_reads_is_stopped_being_read(
    fresh: RunningGateway,
) -> None:
    """`SET wardgate.reason` is answered by the gateway itself, without the target: the
    answers back up in the gateway unless it stops reading the agent."""
    sock, _ = _login(fresh.port)
    try:
        with _watching(fresh) as watch:
            blocked = _flood(sock, w.query("SET wardgate.reason = 'x'") * 200, 15)
        assert blocked, "the gateway kept reading an agent that reads nothing"
        watch.check(120 * MiB)
    finally:
        sock.close()


def test_copy_in_to_a_target_that_does_not_read_holds_flat_memory(
    fresh: RunningGateway, pg_cluster
) -> None:
    """COPY FROM STDIN into a table another session has locked: the target reads
    nothing, so the gateway must stop reading the agent's CopyData."""
    pg_cluster.psql(
        "orders", "create table if not exists t_copy_lock (v text); grant all on t_copy_lock to app"
    )
    locker = psycopg.connect(fresh.dsn())
    locker.execute("lock table t_copy_lock in access exclusive mode")
    sock, _ = _login(fresh.port)
    try:
        with _watching(fresh) as watch:
            sock.sendall(w.query("copy t_copy_lock from stdin"))
            row = b"d" + struct.pack("!I", 4 + 65536) + b"z" * 65535 + b"\n"
            blocked = _flood(sock, row * 16, 15)
        assert blocked, "the gateway kept reading CopyData the target does not take"
        watch.check(120 * MiB)
    finally:
        sock.close()
        locker.close()


def _expect_fatal(sock: socket.socket, timeout: float = 10) -> dict:
    sock.settimeout(timeout)
    reader = MessageReader()
    while True:
        msg = reader.next_message()
        if msg is None:
            data = sock.recv(65536)
            assert data, "closed without an ErrorResponse"
            reader.feed(data)
            continue
        if msg[0] == ord("E"):
            return decode_fields(msg[1])


def test_huge_message_during_authentication_is_refused_at_its_header(
    fresh: RunningGateway,
) -> None:
    """Before authentication anyone can connect: a SASL message announcing 60 MB must be
    refused when its length is read, not buffered (ten of them were 600 MB of RSS)."""
    socks = []
    try:
        with _watching(fresh) as watch:
            for _ in range(10):
                sock = socket.create_connection(("127.0.0.1", fresh.port))
                socks.append(sock)
                sock.sendall(w.startup_message({"user": "nobody", "database": "orders"}))
                sock.recv(1000)  # AuthenticationSASL
                sock.sendall(b"p" + struct.pack("!I", 60_000_004))
                try:
                    sock.settimeout(5)
                    for _ in range(20):
                        sock.sendall(b"x" * MiB)
                except OSError:
                    pass
                err = _expect_fatal(sock)
                assert err["S"] == "FATAL" and err["C"] == "08P01", err
                assert "limit" in err["M"]
            time.sleep(2)
        watch.check(60 * MiB)
    finally:
        for sock in socks:
            sock.close()


def _events(gw: RunningGateway, kind: str) -> list:
    from wardgate.audit.store import AuditStore

    store = AuditStore.open(str(gw.directory / "audit.db"))
    try:
        return list(store.events(kind=kind))
    finally:
        store.close()


def test_agent_that_leaves_while_held_ends_its_approval_request(fresh: RunningGateway) -> None:
    """A held statement whose agent disconnects can never run: its request must not stay
    pending for reviewers (nor count in wardgate_approvals_pending) until the gateway
    restarts, and its end is evidence. Repeated, it would flood the reviewers' queue."""
    fresh.cluster.psql(
        "orders", "create table if not exists t_held_left (v int); grant all on t_held_left to app"
    )
    for _ in range(3):
        sock, _ = _login(fresh.port)
        sock.sendall(w.query("delete from t_held_left"))
        sock.settimeout(10)
        got = b""
        while b"approval" not in got:
            got += sock.recv(65536)
        sock.close()
    deadline = time.monotonic() + 10
    while True:
        abandoned = _events(fresh, "approval_abandoned")
        if len(abandoned) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(abandoned) == 3, f"{len(abandoned)} of 3 requests were ended"
    assert all(e.session for e in abandoned)
    assert all("session ended" in json.dumps(e.meta) for e in abandoned), abandoned[0].meta


def test_a_query_of_very_many_statements_is_refused_before_it_is_parsed(
    fresh: RunningGateway,
) -> None:
    """Each statement of a message is parsed, decided and recorded before the first runs:
    100,000 `select 1;` in one Query (900 KB) grew the gateway by ~400 MiB, and a 64 MiB
    message could hold seven million. Refused by rule, recorded, the session usable."""
    sock, reader = _login(fresh.port)
    try:
        with _watching(fresh) as watch:
            sock.sendall(w.query("select 1;" * 200_000))
            sock.settimeout(30)
            got = _read_until(sock, reader, {ord("Z")}, timeout=30)
            errors = [decode_fields(m[1]) for m in got if m[0] == ord("E")]
            assert len(errors) == 1 and errors[0]["C"] == "42501", errors
            assert "gateway/too-many-statements" in errors[0]["M"]
            assert not [m for m in got if m[0] == ord("D")]
            sock.sendall(w.query("select 'usable'"))
            got = _read_until(sock, reader, {ord("Z")})
            assert [m for m in got if m[0] == ord("D")]
            time.sleep(1.5)
        watch.check(150 * MiB)
    finally:
        sock.close()
    refused = [e for e in _events(fresh, "command") if e.rule == "gateway/too-many-statements"]
    assert len(refused) == 1 and refused[0].verdict == "deny"


def test_connections_that_never_finish_set_up_cost_little_and_do_not_lock_out_agents(
    pg_cluster, tmp_path: Path
) -> None:
    """Slowloris: hundreds of connections that send nothing, half a startup packet, or
    stop in the middle of SCRAM. Each holds a descriptor until the set-up timeout; under
    a service manager's usual soft limit (1024, here 256) they refused every new session.
    The gateway raises its soft limit to the hard one at start."""
    cfg, env = write_config(tmp_path, pg_cluster)
    proc = GatewayProcess(cfg, env, open_files=(256, 8192)).start()
    gw = RunningGateway(proc, tmp_path, pg_cluster)
    socks = []
    try:
        with _watching(gw) as watch:
            for i in range(600):
                sock = socket.create_connection(("127.0.0.1", gw.port))
                socks.append(sock)
                if i % 3 == 1:
                    sock.sendall(struct.pack("!I", 80) + b"\x00\x03\x00\x00user\x00ci")
                elif i % 3 == 2:
                    sock.sendall(w.startup_message({"user": "ci-bot", "database": "orders"}))
            time.sleep(1)
            with psycopg.connect(gw.dsn(), connect_timeout=10) as conn:
                assert conn.execute("select 'new session'").fetchone() == ("new session",)
        watch.check(60 * MiB)
        assert psutil.Process(proc.proc.pid).rlimit(psutil.RLIMIT_NOFILE)[0] == 8192  # type: ignore[union-attr]
    finally:
        for sock in socks:
            sock.close()
        proc.stop()
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def _read_to_end(
    sock: socket.socket, reader: MessageReader, timeout: float = 20
) -> list[tuple[int, bytes]]:
    sock.settimeout(timeout)
    out = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except OSError:
            break
        if not data:
            break
        reader.feed(data)
        while (msg := reader.next_message()) is not None:
            out.append((msg[0], msg[1]))
    return out


def test_target_going_down_mid_session_ends_every_session_natively_and_recorded(
    fresh: RunningGateway, pg_cluster
) -> None:
    """The target stops while one session idles, one is in the middle of a result its
    agent is not reading, and one waits for an approval: each agent gets an
    ErrorResponse and EOF, each session_end is recorded, the approval is abandoned, and
    once the target is back new sessions work."""
    pg_cluster.psql(
        "orders", "create table if not exists t_down (v int); grant all on t_down to app"
    )
    idle = psycopg.connect(fresh.dsn(), autocommit=True)
    streaming, streaming_reader = _login(fresh.port)
    streaming.sendall(w.query("select g, repeat('r', 200) from generate_series(1, 5000000) g"))
    streaming_reader.feed(streaming.recv(65536))  # the result has begun; the agent stops reading
    held, held_reader = _login(fresh.port)
    held.sendall(w.query("delete from t_down"))
    held.settimeout(10)
    notices: list = []
    while not notices:
        notices = [m for m in _read_until(held, held_reader, {ord("N")}) if m[0] == ord("N")]
    try:
        pg_cluster.stop()
        for sock, reader in ((streaming, streaming_reader), (held, held_reader)):
            msgs = _read_to_end(sock, reader)
            errors = [decode_fields(body) for t, body in msgs if t == ord("E")]
            assert errors and errors[-1]["S"] == "FATAL", errors
        with pytest.raises(psycopg.OperationalError):
            idle.execute("select 1")
    finally:
        pg_cluster.start()
        for sock in (streaming, held):
            sock.close()
        idle.close()
    with psycopg.connect(fresh.dsn(), connect_timeout=10) as conn:
        assert conn.execute("select 'back'").fetchone() == ("back",)
    time.sleep(0.5)
    ends = [e for e in _events(fresh, "session_end")]
    assert sum("target" in json.dumps(e.meta) for e in ends) >= 3, [e.meta for e in ends]
    assert len(_events(fresh, "approval_abandoned")) == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs) for the audit store: a disk that fills up."""
    import subprocess

    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_refuses_then_service_resumes_when_space_returns(
    pg_cluster, tmp_path: Path, small_disk: Path
) -> None:
    """The store's filesystem fills up (a real ENOSPC, not a file-size limit): statements
    are refused with 58000 and do not reach the target; once space is freed the same
    session and new ones work again without a restart, and the log verifies."""
    import subprocess
    import sys

    pg_cluster.psql(
        "orders", "create table if not exists t_enospc (marker text); grant all on t_enospc to app"
    )
    cfg, env = write_config(
        tmp_path / "gw", pg_cluster, extra={"store": f"sqlite:///{small_disk / 'audit.db'}"}
    )
    proc = GatewayProcess(cfg, env).start()
    gw = RunningGateway(proc, tmp_path / "gw", pg_cluster)
    ballast = small_disk / "ballast"
    refused = None
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            conn.execute("insert into t_enospc values ('before')")
            # leave ~100 KiB free, then write statements with large text until refused
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            ballast.write_bytes(b"\0" * max(0, free - 100 * 1024))
            filler = "f" * 20_000
            for i in range(200):
                try:
                    conn.execute(f"insert into t_enospc values ('full-{i}') -- {filler}")
                except psycopg.Error as exc:
                    assert exc.sqlstate == "58000", exc
                    assert "wardgate: audit store unavailable" in str(exc)
                    refused = f"full-{i}"
                    break
            assert refused is not None, "the disk never filled up"
            ballast.unlink()
            deadline = time.monotonic() + 20
            while True:  # the store may take a moment (a writer restart) to come back
                try:
                    conn.execute("insert into t_enospc values ('after')")
                    break
                except psycopg.Error as exc:
                    assert exc.sqlstate == "58000", exc
                    assert time.monotonic() < deadline, "service did not resume"
                    time.sleep(0.5)
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            assert conn.execute("select 'new session'").fetchone() == ("new session",)
    finally:
        ballast.unlink(missing_ok=True)
        proc.stop()
    markers = pg_cluster.psql("orders", "select string_agg(marker, ',') from t_enospc")
    assert refused not in markers.split(","), "a refused statement reached the target"
    assert "before" in markers and "after" in markers
    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "verify", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def _exchange(sock: socket.socket, data: bytes) -> list[tuple[int, bytes]]:
    sock.sendall(data)
    return [(m[0], m[1]) for m in _read_until(sock, MessageReader(), {ord("Z")})]


def _msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!I", 4 + len(body)) + body


@pytest.mark.parametrize(
    "message",
    [
        _msg(b"Q", b"select '\xff\xfe'\x00"),
        # a UTF-16 surrogate encoded in UTF-8: not valid UTF-8 either
        _msg(b"Q", b"select '\xed\xa0\x80'\x00"),
        _msg(b"P", b"\x00select '\xff'\x00\x00\x00")
        + w.bind("", "", (), (), ())
        + w.execute("", 0)
        + w.sync(),
    ],
    ids=["query", "query-surrogate", "parse"],
)
def test_invalid_utf8_in_a_statement_is_a_native_error_and_recorded(
    fresh: RunningGateway, message: bytes
) -> None:
    """PostgreSQL answers `ERROR 22021 invalid byte sequence for encoding "UTF8"` and the
    session goes on. The gateway closed the session with XX000 "internal error" (and a
    traceback), and the refusal it meant to record could not be recorded."""
    sock, _ = _login(fresh.port)
    try:
        msgs = _exchange(sock, message)
        errors = [decode_fields(body) for t, body in msgs if t == ord("E")]
        assert len(errors) == 1 and errors[0]["S"] == "ERROR", errors
        assert errors[0]["C"] == "22021" and "UTF8" in errors[0]["M"], errors
        msgs = _exchange(sock, w.query("select 'usable'"))
        assert [m for m in msgs if m[0] == ord("D")], msgs
    finally:
        sock.close()
    time.sleep(0.3)
    refused = [e for e in _events(fresh, "command") if e.rule == "gateway/invalid-utf8"]
    assert len(refused) == 1 and refused[0].verdict == "deny"


def _startup(params: list[tuple[bytes, bytes]]) -> bytes:
    body = struct.pack("!I", 196608) + b"".join(k + b"\0" + v + b"\0" for k, v in params) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


@pytest.mark.parametrize(
    "params",
    [
        [(b"user", b"\xff\xfebot"), (b"database", b"orders")],
        [(b"user", b"ci-bot"), (b"database", b"orders"), (b"application_name", b"app\xff")],
        [(b"user", b"ci-bot"), (b"database", b"orders"), (b"search_path", b"pub\xfflic")],
    ],
    ids=["user", "application_name", "search_path"],
)
def test_invalid_utf8_in_the_startup_packet_is_refused_at_once(
    fresh: RunningGateway, params: list
) -> None:
    """Startup parameters that are not UTF-8 went on into the set-up: a login under such
    a name failed to be recorded ("could not record an authentication failure"), one
    with such an application_name was refused as "audit store unavailable", and a
    search_path went to the target as it was. Refused before authentication instead."""
    sock = socket.create_connection(("127.0.0.1", fresh.port))
    try:
        sock.sendall(_startup(params))
        err = _expect_fatal(sock)
        assert err["C"] == "22021" and "UTF8" in err["M"], err
    finally:
        sock.close()
    assert "could not record" not in fresh.proc.stderr


def test_named_prepared_statements_per_session_are_bounded(fresh: RunningGateway) -> None:
    """Each named statement a session prepares stays in the gateway's memory (~1.5 KiB
    by Parse, 100,000 of them were 145 MiB; ~3 KiB by SQL PREPARE) until closed: past
    10,000 a Parse is refused with 53400, a PREPARE by rule, recorded, and the session
    goes on."""
    from wardgate.engines.postgres.relay import MAX_PREPARED_STATEMENTS

    sock, reader = _login(fresh.port)
    try:
        for start in range(0, MAX_PREPARED_STATEMENTS, 2500):
            batch = b"".join(w.parse(f"s{i}", "select 1", ()) for i in range(start, start + 2500))
            got = _exchange(sock, batch + w.sync())
            assert not [m for m in got if m[0] == ord("E")]
        got = _exchange(sock, w.parse("one_more", "select 1", ()) + w.sync())
        errors = [decode_fields(body) for t, body in got if t == ord("E")]
        assert len(errors) == 1 and errors[0]["C"] == "53400", errors
        assert "gateway/too-many-prepared-statements" in errors[0]["M"]
        # closing one makes room
        got = _exchange(
            sock, w.close("S", "s0") + w.parse("one_more", "select 'room'", ()) + w.sync()
        )
        assert not [m for m in got if m[0] == ord("E")], got
        got = _exchange(sock, w.query("select 'usable'"))
        assert [m for m in got if m[0] == ord("D")]
        # the same bound for SQL PREPARE (~3 KiB each in the policy's session state)
        for start in range(0, MAX_PREPARED_STATEMENTS, 5000):
            sql = ";".join(f"prepare p{i} as select {i}" for i in range(start, start + 5000))
            assert not [m for m in _exchange(sock, w.query(sql)) if m[0] == ord("E")]
        got = _exchange(sock, w.query("prepare sql_more as select 1"))
        errors = [decode_fields(body) for t, body in got if t == ord("E")]
        assert len(errors) == 1 and "gateway/too-many-prepared-statements" in errors[0]["M"]
        got = _exchange(sock, w.query("deallocate p0; prepare sql_more as select 1"))
        assert not [m for m in got if m[0] == ord("E")], got
    finally:
        sock.close()
    time.sleep(0.3)
    refused = [
        e for e in _events(fresh, "command") if e.rule == "gateway/too-many-prepared-statements"
    ]
    assert len(refused) == 2


def test_long_pipelines_of_real_clients_pass_the_in_flight_limit(fresh: RunningGateway) -> None:
    """The in-flight limit stops reading, it does not refuse: a psycopg pipeline and an
    asyncpg executemany of 6,000 statements each (about 24,000 messages each, well past
    4,096 in flight, Syncs only at the end) complete, every row arrives."""
    import asyncio

    asyncpg = pytest.importorskip("asyncpg")
    from wardgate.testing.gateway_process import AGENT_TOKENS

    fresh.cluster.psql(
        "orders", "create table if not exists t_pipe (v int, src text); grant all on t_pipe to app"
    )
    with psycopg.connect(fresh.dsn(), autocommit=True) as conn:
        with conn.pipeline(), conn.cursor() as cur:
            for i in range(6_000):
                cur.execute("insert into t_pipe values (%s, 'psycopg')", (i,))

    async def run() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=fresh.port,
            user="ci-bot",
            password=AGENT_TOKENS["ci-bot"],
            database="orders",
            ssl=False,
        )
        try:
            await asyncio.wait_for(
                conn.executemany(
                    "insert into t_pipe values ($1, 'asyncpg')", [(i,) for i in range(6_000)]
                ),
                120,
            )
        finally:
            await conn.close()

    asyncio.run(run())
    # the smallest answers (5 bytes each) and a single Sync at the very end
    sock, _ = _login(fresh.port)
    try:
        got = _exchange(sock, w.parse("", "select 1", ()) * 20_000 + w.sync())
        assert sum(1 for t, _ in got if t == ord("1")) == 20_000
    finally:
        sock.close()
    counts = fresh.cluster.psql(
        "orders",
        "select string_agg(src || '=' || n, ',' order by src) from "
        "(select src, count(*) n from t_pipe group by src) c",
    )
    assert counts == "asyncpg=6000,psycopg=6000"


def test_one_identity_cannot_take_every_target_connection(pg_cluster, tmp_path: Path) -> None:
    """Every agent shares the gateway's one target role, so PostgreSQL's per-role
    CONNECTION LIMIT cannot tell agents apart: one identity opening sessions without end
    took the target's connections from everyone. `max_sessions_per_identity` bounds
    it: the next login gets FATAL 53300, recorded; other identities still get in, and
    a closed session frees its place."""
    gw = start_gateway(tmp_path, pg_cluster, connection_extra={"max_sessions_per_identity": 3})
    conns = []
    try:
        conns = [psycopg.connect(gw.dsn(), autocommit=True) for _ in range(3)]
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(gw.dsn(), connect_timeout=10)
        assert "max_sessions_per_identity" in str(info.value)
        with psycopg.connect(gw.dsn("alice"), autocommit=True) as other:
            assert other.execute("select 'other identity'").fetchone() == ("other identity",)
        conns.pop().close()
        time.sleep(0.3)
        conns.append(psycopg.connect(gw.dsn(), autocommit=True))
        assert all(c.execute("select 1").fetchone() == (1,) for c in conns)
    finally:
        for c in conns:
            c.close()
        gw.proc.stop()
    refused = [e for e in _events(gw, "auth_failure") if e.meta.get("reason") == "session limit"]
    assert len(refused) == 1 and refused[0].identity == "ci-bot"
    assert refused[0].meta["sqlstate"] == "53300"
