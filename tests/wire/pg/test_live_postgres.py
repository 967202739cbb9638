"""The codec against real PostgreSQL and real libpq (psycopg), no fakes.

A throw-away PostgreSQL 15 cluster with scram-sha-256 auth is started on a free port for
this module. The tests drive it with the codec over a plain socket (ScramClient, writers,
MessageReader, decoders), relay real libpq traffic through a capturing proxy and decode
every byte of it, and let real libpq authenticate against a ScramServer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wardgate.wire.pg import auth as a
from wardgate.wire.pg import backend as b
from wardgate.wire.pg import constants as c
from wardgate.wire.pg import frontend as f
from wardgate.wire.pg import messages as m
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.framing import MessageReader

PG_BIN = Path(os.environ.get("WARDGATE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PASSWORD = "s3cret-\u00e9"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scram_pg() -> Iterator[int]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}: install postgresql-15")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot run initdb")
        as_user = ["runuser", "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="wardgate-pg-"))
    pwfile = tmp / "pw"
    pwfile.write_text(PASSWORD + "\n", encoding="utf-8")
    if as_user:
        shutil.chown(tmp, "postgres")
        shutil.chown(pwfile, "postgres")
    data = tmp / "data"
    port = _free_port()
    run = dict(check=True, capture_output=True, timeout=120)
    subprocess.run(
        [*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-N"]
        + ["-A", "scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"],
        **run,
    )
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l"]
        + [str(tmp / "log"), "start"],
        **run,
    )
    try:
        yield port
    finally:
        subprocess.run(
            [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(tmp, ignore_errors=True)


class Conn:
    """A minimal blocking client built only from the codec."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = MessageReader()

    def send(self, *msgs: bytes) -> None:
        self.sock.sendall(b"".join(msgs))

    def recv(self) -> tuple[int, object, bytes]:
        while (msg := self.reader.next_message()) is None:
            chunk = self.sock.recv(7)  # deliberately tiny reads: split framing for real
            if not chunk:
                raise EOFError
            self.reader.feed(chunk)
        t, body, raw = msg
        decoded = b.decode_backend(t, body)
        assert w.encode(decoded) == raw  # every real message round-trips bit for bit
        return t, decoded, raw

    def until_ready(self) -> list[object]:
        out = []
        while True:
            _, msg, _ = self.recv()
            out.append(msg)
            if isinstance(msg, m.ReadyForQuery):
                return out

    def login(self, password: str) -> list[object]:
        self.send(w.startup_message({"user": "postgres", "database": "postgres"}))
        _, auth, _ = self.recv()
        assert isinstance(auth, m.Authentication) and auth.code == c.AUTH_SASL
        assert "SCRAM-SHA-256" in b.decode_sasl_mechanisms(auth.data)
        client = a.ScramClient("", password)
        self.send(w.sasl_initial_response(a.SCRAM_SHA_256, client.client_first()))
        _, cont, _ = self.recv()
        assert isinstance(cont, m.Authentication) and cont.code == c.AUTH_SASL_CONTINUE
        self.send(w.sasl_response(client.handle_server_first(cont.data)))
        _, final, _ = self.recv()
        if isinstance(final, m.ErrorResponse):
            return [final]
        assert final.code == c.AUTH_SASL_FINAL
        client.verify_server_final(final.data)
        assert client.authenticated
        return self.until_ready()

    def close(self) -> None:
        self.send(w.terminate())
        self.sock.close()


def test_scram_client_and_codec_against_real_postgres(scram_pg: int) -> None:
    conn = Conn(scram_pg)
    try:
        startup = conn.login(PASSWORD)
        assert isinstance(startup[0], m.Authentication) and startup[0].code == c.AUTH_OK
        params = {x.name: x.value for x in startup if isinstance(x, m.ParameterStatus)}
        assert params["server_version"].startswith("15")
        assert any(isinstance(x, m.BackendKeyData) for x in startup)

        # simple query, multi-statement, NULLs, non-ASCII
        conn.send(w.query("SELECT 1 AS one, NULL::text AS n, 'caf\u00e9' AS t; SELECT 2"))
        out = conn.until_ready()
        desc = next(x for x in out if isinstance(x, m.RowDescription))
        assert [fd.name for fd in desc.fields] == ["one", "n", "t"]
        assert desc.fields[0].type_oid == 23
        rows = [x.values for x in out if isinstance(x, m.DataRow)]
        assert rows == [(b"1", None, "caf\u00e9".encode()), (b"2",)]
        assert [b.rows_from_tag(x.tag) for x in out if isinstance(x, m.CommandComplete)] == [1, 1]

        # pipelined extended query with a binary parameter
        conn.send(
            w.parse("s1", "SELECT g, $1::int4 FROM generate_series(1, 3) g", [23]),
            w.bind("", "s1", [1], [(7).to_bytes(4, "big")], [0]),
            w.describe("P", ""),
            w.execute("", 2),
            w.sync(),
        )
        out = conn.until_ready()
        kinds = [type(x).__name__ for x in out]
        assert kinds == [
            "ParseComplete",
            "BindComplete",
            "RowDescription",
            "DataRow",
            "DataRow",
            "PortalSuspended",
            "ReadyForQuery",
        ]

        # COPY in and out
        conn.send(w.query("CREATE TEMP TABLE t (id int, email text)"))
        conn.until_ready()
        conn.send(w.query("COPY t FROM STDIN"))
        _, cin, _ = conn.recv()
        assert isinstance(cin, m.CopyInResponse) and cin.column_formats == (0, 0)
        conn.send(*(w.copy_data(f"{i}\tu{i}@x.org\n".encode()) for i in range(100)), w.copy_done())
        out = conn.until_ready()
        assert out[0] == m.CommandComplete("COPY 100")
        conn.send(w.query("COPY (SELECT * FROM t WHERE id < 3) TO STDOUT"))
        out = conn.until_ready()
        assert isinstance(out[0], m.CopyOutResponse)
        assert [x.data for x in out if isinstance(x, m.CopyData)] == [
            b"0\tu0@x.org\n",
            b"1\tu1@x.org\n",
            b"2\tu2@x.org\n",
        ]

        # errors, notices, notifications
        conn.send(w.query("SELECT * FROM no_such_table"))
        out = conn.until_ready()
        assert out[0].code == "42P01" and out[-1] == m.ReadyForQuery("I")
        conn.send(w.query("LISTEN jobs; NOTIFY jobs, 'done'"))
        out = conn.until_ready()
        note = next(x for x in out if isinstance(x, m.NotificationResponse))
        assert (note.channel, note.payload) == ("jobs", "done")
        conn.send(w.query(""))
        assert isinstance(conn.until_ready()[0], m.EmptyQueryResponse)
    finally:
        conn.close()


def test_scram_client_wrong_password_is_refused_by_postgres(scram_pg: int) -> None:
    conn = Conn(scram_pg)
    try:
        (err,) = conn.login("not-the-password")
        assert isinstance(err, m.ErrorResponse) and err.code == c.SQLSTATE_INVALID_PASSWORD
    finally:
        conn.sock.close()


# -- real libpq traffic through a capturing relay -------------------------------------------


def _pump(src: socket.socket, dst: socket.socket, sink: bytearray) -> None:
    try:
        while chunk := src.recv(65536):
            sink += chunk
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_real_libpq_traffic_decodes_completely(scram_pg: int) -> None:
    psycopg = pytest.importorskip("psycopg")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    up, down = bytearray(), bytearray()
    threads: list[threading.Thread] = []

    def accept() -> None:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", scram_pg))
        for src, dst, sink in ((client, server, up), (server, client, down)):
            t = threading.Thread(target=_pump, args=(src, dst, sink), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    dsn = f"host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname=postgres"
    with psycopg.connect(dsn + " sslmode=disable gssencmode=disable") as conn:
        conn.execute("CREATE TEMP TABLE t (id int, v text)")
        conn.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "a", 2, None))
        with conn.cursor() as cur:
            with cur.copy("COPY t FROM STDIN") as copy:
                copy.write_row((3, "c"))
            cur.execute("SELECT * FROM t ORDER BY id", binary=True)
            assert cur.fetchall() == [(1, "a"), (2, None), (3, "c")]
    acceptor.join(5)
    for t in threads:
        t.join(5)
    listener.close()

    reader = MessageReader(startup=True)
    reader.feed(bytes(up))
    front = list(reader)
    assert reader.buffered == 0 and b"".join(raw for *_, raw in front) == bytes(up)
    decoded = [f.decode_frontend(t, body) for t, body, _ in front]
    assert isinstance(decoded[0], m.StartupMessage) and decoded[0].user == "postgres"
    mech, first = f.decode_sasl_initial(front[1][1])
    assert mech == "SCRAM-SHA-256" and first.startswith(b"n,,n=,r=")  # libpq's empty n=
    assert any(isinstance(x, m.Bind) for x in decoded)
    assert any(isinstance(x, m.CopyData) for x in decoded)
    assert isinstance(decoded[-1], m.Terminate)

    reader = MessageReader()
    reader.feed(bytes(down))
    back = list(reader)
    assert reader.buffered == 0 and b"".join(raw for *_, raw in back) == bytes(down)
    decoded = [b.decode_backend(t, body) for t, body, _ in back]
    for (_, _, raw), msg in zip(back, decoded, strict=True):
        assert w.encode(msg) == raw
    assert sum(isinstance(x, m.DataRow) for x in decoded) == 3


# -- real libpq authenticating against ScramServer --------------------------------------------


def _serve_one(listener: socket.socket, verifier: a.ScramVerifier, result: dict) -> None:
    sock, _ = listener.accept()
    sock.settimeout(10)
    reader = MessageReader(startup=True)

    def recv() -> tuple[int, bytes]:
        while (msg := reader.next_message()) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError
            reader.feed(chunk)
        return msg[0], msg[1]

    try:
        t, body = recv()
        startup = f.decode_startup(body)
        assert isinstance(startup, m.StartupMessage)
        result["user"] = startup.user
        server = a.ScramServer(verifier)
        sock.sendall(w.authentication_sasl([a.SCRAM_SHA_256]))
        mech, data = f.decode_sasl_initial(recv()[1])
        assert mech == a.SCRAM_SHA_256 and data is not None
        sock.sendall(w.authentication_sasl_continue(server.handle_client_first(data)))
        try:
            final = server.handle_client_final(f.decode_sasl_response(recv()[1]).data)
        except a.AuthenticationFailed as exc:
            sock.sendall(w.error_response("FATAL", c.SQLSTATE_INVALID_PASSWORD, str(exc)))
            result["ok"] = False
            return
        sock.sendall(
            w.authentication_sasl_final(final)
            + w.authentication_ok()
            + w.parameter_status("server_version", "15.0")
            + w.parameter_status("client_encoding", "UTF8")
            + w.parameter_status("integer_datetimes", "on")
            + w.backend_key_data(1, 2)
            + w.ready_for_query("I")
        )
        result["ok"] = True
        t, _ = recv()
        result["last"] = t
    finally:
        sock.close()


@pytest.mark.parametrize(("password", "ok"), [(PASSWORD, True), ("wrong", False)])
def test_libpq_authenticates_against_scram_server(password: str, ok: bool) -> None:
    psycopg = pytest.importorskip("psycopg")
    verifier = a.make_scram_verifier(PASSWORD, iterations=4096)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict = {}
    thread = threading.Thread(target=_serve_one, args=(listener, verifier, result), daemon=True)
    thread.start()
    dsn = (
        f"host=127.0.0.1 port={port} user=agent dbname=x password={password} "
        "sslmode=disable gssencmode=disable connect_timeout=5"
    )
    try:
        if ok:
            psycopg.connect(dsn).close()
        else:
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(dsn)
    finally:
        thread.join(5)
        listener.close()
    assert result["user"] == "agent" and result["ok"] is ok
    if ok:
        assert result["last"] == c.TERMINATE
