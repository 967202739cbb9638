"""A realistic conversation fed in every two-piece split and one byte at a time gives the
same messages, and the raw bytes concatenated give back the input."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from wardgate.wire.pg import backend as b
from wardgate.wire.pg import frontend as f
from wardgate.wire.pg import messages as m
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.framing import MessageReader

FIELDS = [
    m.Field("id", 16384, 1, 23, 4, -1, 0),
    m.Field("email", 16384, 2, 25, -1, -1, 0),
    m.Field("note", 16384, 3, 25, -1, -1, 0),
]

CLIENT = b"".join(
    [
        w.ssl_request(),
        # server answers 'N'; the client sends a real startup packet
        w.startup_message({"user": "agent", "database": "app", "application_name": "ci"}),
        w.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"),
        w.sasl_response(b"c=biws,r=rOprNGfwEbeRWgbNEkqOxyz,p=dHzbZapWIk4jUhN+Ute9yt=="),
        # pipelined extended query
        w.parse("s1", "SELECT id, email, note FROM users WHERE id > $1", [23]),
        w.bind("", "s1", [0], [b"10"], [0]),
        w.describe("P", ""),
        w.execute("", 0),
        w.sync(),
        # simple query then COPY FROM STDIN
        w.query("COPY users FROM STDIN"),
        *(w.copy_data(f"{i}\tuser{i}@example.com\t\\N\n".encode()) for i in range(5)),
        w.copy_done(),
        w.terminate(),
    ]
)

SERVER = b"".join(
    [
        w.authentication_sasl(["SCRAM-SHA-256"]),
        w.authentication_sasl_continue(
            b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        ),
        w.authentication_sasl_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        w.authentication_ok(),
        w.parameter_status("server_version", "15.4"),
        w.parameter_status("client_encoding", "UTF8"),
        w.backend_key_data(31337, 271828),
        w.ready_for_query("I"),
        w.parse_complete(),
        w.bind_complete(),
        w.row_description(FIELDS),
        *(w.data_row([str(i).encode(), f"u{i}@example.com".encode(), None]) for i in range(40)),
        w.command_complete("SELECT 40"),
        w.ready_for_query("I"),
        w.copy_in_response(0, [0, 0, 0]),
        w.notice_response("NOTICE", "00000", "copying"),
        w.command_complete("COPY 5"),
        w.ready_for_query("I"),
        w.notification_response(99, "jobs", "done"),
        w.error_response("FATAL", "57P01", "terminating connection due to administrator command"),
    ]
)


def _read(chunks: Iterable[bytes], *, client: bool) -> list[tuple[int, bytes, bytes]]:
    r = MessageReader(startup=client)
    out: list[tuple[int, bytes, bytes]] = []
    for chunk in chunks:
        r.feed(chunk)
        while (msg := r.next_message()) is not None:
            out.append(msg)
            if client and msg[0] == 0 and isinstance(f.decode_startup(msg[1]), m.SSLRequest):
                r.expect_startup()
    assert r.buffered == 0
    return out


def _decoded(msgs: list[tuple[int, bytes, bytes]], *, client: bool) -> list[object]:
    if client:
        return [f.decode_frontend(t, body) for t, body, _ in msgs]
    return [b.decode_backend(t, body) for t, body, _ in msgs]


@pytest.mark.parametrize("client", [True, False], ids=["client", "server"])
def test_stream_decodes_and_raw_concatenates(client: bool) -> None:
    data = CLIENT if client else SERVER
    msgs = _read([data], client=client)
    assert b"".join(raw for _, _, raw in msgs) == data
    decoded = _decoded(msgs, client=client)
    if client:
        assert isinstance(decoded[0], m.SSLRequest)
        assert isinstance(decoded[1], m.StartupMessage) and decoded[1].user == "agent"
        assert sum(isinstance(x, m.CopyData) for x in decoded) == 5
        assert isinstance(decoded[-1], m.Terminate)
    else:
        assert sum(isinstance(x, m.DataRow) for x in decoded) == 40
        assert decoded[-1].code == "57P01"
    assert len(msgs) == (17 if client else 59)


@pytest.mark.parametrize("client", [True, False], ids=["client", "server"])
def test_every_two_piece_split(client: bool) -> None:
    data = CLIENT if client else SERVER
    expected = _read([data], client=client)
    for cut in range(len(data) + 1):
        assert _read([data[:cut], data[cut:]], client=client) == expected, cut


@pytest.mark.parametrize("client", [True, False], ids=["client", "server"])
def test_one_byte_at_a_time(client: bool) -> None:
    data = CLIENT if client else SERVER
    expected = _read([data], client=client)
    got = _read([data[i : i + 1] for i in range(len(data))], client=client)
    assert got == expected
    assert b"".join(raw for _, _, raw in got) == data


def test_irregular_chunks() -> None:
    data = SERVER
    expected = _read([data], client=False)
    sizes = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233]
    chunks, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        chunks.append(data[i : i + n])
        i, k = i + n, k + 1
    assert _read(chunks, client=False) == expected
