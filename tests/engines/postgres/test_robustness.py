"""Bad input, a full audit disk, and a very large result: each ends cleanly, nothing
unrecorded reaches the target, and the gateway keeps serving the other sessions."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from wardgate.testing.gateway_process import AGENT_TOKENS, GatewayProcess, write_config
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.auth import ScramClient
from wardgate.wire.pg.backend import decode_authentication, decode_fields
from wardgate.wire.pg.framing import MessageReader


def _read_until(
    sock: socket.socket, reader: MessageReader, types: set[int], timeout: float = 10
) -> list:
    sock.settimeout(timeout)
    out = []
    while True:
        msg = reader.next_message()
        if msg is None:
            data = sock.recv(65536)
            if not data:
                return out
            reader.feed(data)
            continue
        out.append(msg)
        if msg[0] in types:
            return out


def _login(port: int) -> tuple[socket.socket, MessageReader]:
    """A real SCRAM login using the codec as the client, to then misbehave."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(w.startup_message({"user": "ci-bot", "database": "orders"}))
    reader = MessageReader()
    scram = ScramClient("ci-bot", AGENT_TOKENS["ci-bot"])
    msgs = _read_until(sock, reader, {ord("R")})
    assert decode_authentication(msgs[-1][1]).code == 10
    sock.sendall(w.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
    msgs = _read_until(sock, reader, {ord("R")})
    sock.sendall(
        w.sasl_response(scram.handle_server_first(decode_authentication(msgs[-1][1]).data))
    )
    _read_until(sock, reader, {ord("Z")})
    return sock, reader


def _fatal_or_closed(sock: socket.socket) -> dict | None:
    reader = MessageReader()
    msgs = _read_until(sock, reader, {ord("E")})
    sock.close()
    errors = [decode_fields(m[1]) for m in msgs if m[0] == ord("E")]
    return errors[-1] if errors else None


@pytest.fixture
def bystander(gateway: RunningGateway):
    """A session opened before the bad input, which must keep working after it."""
    conn = psycopg.connect(gateway.dsn(), autocommit=True)
    yield conn
    assert conn.execute("select 'still here'").fetchone() == ("still here",)
    conn.close()
    with psycopg.connect(gateway.dsn()) as fresh:
        assert fresh.execute("select 1").fetchone() == (1,)


def test_garbage_bytes_at_startup(gateway: RunningGateway, bystander) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"\x00\x00\x00\x10GARBAGEGARBAGE!!")
    err = _fatal_or_closed(sock)
    assert err is not None and err["S"] == "FATAL" and err["C"] == "08P01"


def test_oversized_startup_length(gateway: RunningGateway, bystander) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(struct.pack("!I", 0x7FFFFFFF) + b"\x00\x03\x00\x00")
    err = _fatal_or_closed(sock)
    assert err is not None and err["C"] == "08P01"


def test_truncated_startup_then_disconnect(gateway: RunningGateway, bystander) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(struct.pack("!I", 80) + b"\x00\x03\x00\x00user\x00ci")
    sock.close()
    time.sleep(0.2)


def test_oversized_message_after_login(gateway: RunningGateway, bystander) -> None:
    sock, _ = _login(gateway.port)
    sock.sendall(b"Q" + struct.pack("!I", 0x7FFFFFF0))
    err = _fatal_or_closed(sock)
    assert err is not None and err["C"] == "08P01"


def test_negative_length_after_login(gateway: RunningGateway, bystander) -> None:
    sock, _ = _login(gateway.port)
    sock.sendall(b"Q" + struct.pack("!I", 2) + b"xx")
    err = _fatal_or_closed(sock)
    assert err is not None and err["C"] == "08P01"


def test_disconnect_mid_message(gateway: RunningGateway, bystander) -> None:
    sock, _ = _login(gateway.port)
    sock.sendall(w.query("select 'half a message'")[:9])
    sock.close()
    time.sleep(0.2)


def test_malformed_bind_gets_a_clean_error(gateway: RunningGateway, bystander) -> None:
    sock, _ = _login(gateway.port)
    sock.sendall(
        w.parse("", "select 1", ()) + b"B" + struct.pack("!I", 7) + b"\x00\x00\xff" + w.sync()
    )
    err = _fatal_or_closed(sock)
    assert err is not None and err["C"] == "08P01"


def test_full_audit_disk_refuses_and_nothing_runs(pg_cluster, tmp_path: Path) -> None:
    cfg, env = write_config(tmp_path, pg_cluster)
    proc = GatewayProcess(cfg, env, max_file_size=400_000).start()
    gw = RunningGateway(proc, tmp_path, pg_cluster)
    pg_cluster.psql(
        "orders",
        "create table if not exists t_full (marker text, filler text); grant all on t_full to app",
    )
    filler = "y" * 60_000
    refused_marker = None
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            for i in range(40):
                marker = f"full-{i}"
                try:
                    conn.execute(f"insert into t_full values ('{marker}', '{filler}')")
                except psycopg.Error as exc:
                    assert exc.sqlstate == "58000"
                    assert "wardgate: audit store unavailable" in str(exc)
                    refused_marker = marker
                    break
    finally:
        proc.stop()
    assert refused_marker is not None, "the store never filled up"
    ran = pg_cluster.psql(
        "orders", f"select count(*) from t_full where marker = '{refused_marker}'"
    )
    assert ran == "0", "a statement whose event could not be written reached the target"


def test_million_row_result_streams_with_flat_memory(gateway: RunningGateway) -> None:
    pid = gateway.proc.proc.pid  # type: ignore[union-attr]
    gw_proc = psutil.Process(pid)
    done = threading.Event()

    def rss() -> int:  # the gateway and its audit writer process
        total = gw_proc.memory_info().rss
        for child in gw_proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.05)

    peak = [rss()]
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rows = 0
    try:
        with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
            with conn.cursor() as cur:
                for _row in cur.stream("select g, md5(g::text) from generate_series(1, 1000000) g"):
                    rows += 1
    finally:
        done.set()
        t.join()
    assert rows == 1_000_000
    assert peak[0] < 200 * 1024 * 1024, f"gateway RSS peaked at {peak[0] / 2**20:.0f} MiB"


def test_read_only_audit_store_refuses_and_nothing_runs(pg_cluster, tmp_path: Path) -> None:
    """The store's files turn read-only under a running gateway (chattr +i: even root cannot write)."""
    import shutil
    import subprocess

    if shutil.which("chattr") is None:
        pytest.skip("chattr not found: apt-get install e2fsprogs")
    gw = start_gateway(tmp_path, pg_cluster)
    pg_cluster.psql(
        "orders", "create table if not exists t_ro (marker text); grant all on t_ro to app"
    )
    # the database and its WAL; not the -shm wal-index, which SQLite maps into memory
    # (a write to a mapped page of an immutable file is SIGBUS, not an error)
    files = [str(tmp_path / "audit.db"), str(tmp_path / "audit.db-wal")]
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            conn.execute("insert into t_ro values ('before')")
            r = subprocess.run(["chattr", "+i", *files], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(
                    f"this filesystem does not support the immutable flag: {r.stderr.strip()}"
                )
            with pytest.raises(psycopg.Error) as info:
                conn.execute("insert into t_ro values ('after')")
            assert info.value.sqlstate == "58000"
            assert "wardgate: audit store unavailable" in str(info.value)
    finally:
        subprocess.run(["chattr", "-i", *files], capture_output=True)
        gw.proc.stop()
    assert pg_cluster.psql("orders", "select string_agg(marker, ',') from t_ro") == "before"


def _exchange(sock: socket.socket, data: bytes) -> list[tuple[int, bytes]]:
    sock.sendall(data)
    reader = MessageReader()
    msgs = _read_until(sock, reader, {ord("Z")})
    return [(m[0], m[1]) for m in msgs]


def test_sql_prepared_statements_and_cursors_used_through_the_protocol_are_decided_and_recorded(
    gateway: RunningGateway,
) -> None:
    """PREPARE/DECLARE in SQL make objects the target knows and wardgate's extended-protocol
    tracking does not: Bind and Execute on them are decided and recorded, not waved through."""
    from wardgate.audit.store import AuditStore

    sock, _ = _login(gateway.port)
    try:
        _exchange(sock, w.query("PREPARE wg_p AS SELECT 40 + 2 AS answer"))
        msgs = _exchange(sock, w.bind("", "wg_p", (), (), ()) + w.execute("", 0) + w.sync())
        rows = [m for m in msgs if m[0] == ord("D")]
        assert rows, msgs
        # an unknown name is refused by wardgate, not forwarded
        msgs = _exchange(sock, w.bind("", "wg_missing", (), (), ()) + w.execute("", 0) + w.sync())
        errors = [decode_fields(m[1]) for m in msgs if m[0] == ord("E")]
        assert errors and errors[0]["C"] == "42501" and "wardgate:" in errors[0]["M"]
        # a cursor declared in SQL, fetched with a protocol Execute
        _exchange(
            sock, w.query("BEGIN; DECLARE wg_c CURSOR FOR SELECT g FROM generate_series(1, 3) g")
        )
        msgs = _exchange(sock, w.execute("wg_c", 0) + w.sync())
        assert len([m for m in msgs if m[0] == ord("D")]) == 3
        _exchange(sock, w.query("COMMIT"))
    finally:
        sock.sendall(w.terminate())
        sock.close()
    time.sleep(0.3)
    store = AuditStore.open(str(gateway.directory / "audit.db"))
    try:
        texts = [
            json.loads(store.payload(e.payload_hash))["text"]
            for e in store.events(kind="command")
            if e.payload_hash
        ]
    finally:
        store.close()
    assert 'EXECUTE "wg_p"' in texts
    assert 'FETCH FORWARD ALL FROM "wg_c"' in texts
