"""Every message type: encode -> MessageReader -> decode gives the same message back."""

from __future__ import annotations

import pytest

from wardgate.wire.pg import backend as b
from wardgate.wire.pg import constants as c
from wardgate.wire.pg import frontend as f
from wardgate.wire.pg import messages as m
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.framing import MessageReader, ProtocolError

ODD = "caf\u00e9 \udcff \u2603"  # non-ASCII plus a lone surrogate from surrogateescape

STARTUP = [
    m.StartupMessage(c.PROTOCOL_3_0, {"user": "agent", "database": "db", "options": ODD}),
    m.StartupMessage(c.PROTOCOL_3_0, {}),
    m.SSLRequest(),
    m.GSSENCRequest(),
    m.CancelRequest(1234, -99),
]

FRONTEND = [
    m.Query("SELECT 1; SELECT 2"),
    m.Query(""),
    m.Query(ODD),
    m.Parse("s1", "SELECT $1::int, $2", (23, 0)),
    m.Parse("", "SELECT 1", ()),
    m.Parse("s", "q", (0xFFFFFFFF,)),
    m.Bind("p1", "s1", (0, 1), (b"42", None), (1,)),
    m.Bind("", "", (), (), ()),
    m.Bind("", "", (1,), (b"\0\1\2", b"", None), ()),
    m.Execute("p1", 100),
    m.Execute("", 0),
    m.Describe("S", "s1"),
    m.Describe("P", ""),
    m.Close("S", "s1"),
    m.Close("P", "p"),
    m.Sync(),
    m.Flush(),
    m.Terminate(),
    m.PasswordMessage(b"md5abcdef\0"),
    m.FunctionCall(1598, (0,), (b"x", None), 1),
    m.FunctionCall(1, (), (), 0),
    m.CopyData(b"1\talice\n"),
    m.CopyData(b""),
    m.CopyDone(),
    m.CopyFail("client gave up"),
]

BACKEND = [
    m.Authentication(c.AUTH_OK),
    m.Authentication(c.AUTH_CLEARTEXT),
    m.Authentication(c.AUTH_MD5, b"\1\2\3\4"),
    m.Authentication(c.AUTH_SASL, b"SCRAM-SHA-256\0\0"),
    m.Authentication(c.AUTH_SASL_CONTINUE, b"r=abc,s=c2FsdA==,i=4096"),
    m.Authentication(c.AUTH_SASL_FINAL, b"v=xyz"),
    m.ParameterStatus("server_version", "15.4"),
    m.BackendKeyData(4242, -7),
    m.ReadyForQuery("I"),
    m.ReadyForQuery("T"),
    m.ReadyForQuery("E"),
    m.RowDescription((m.Field("id", 16384, 1, 23, 4, -1, 0), m.Field(ODD, 0, 0, 25, -1, -1, 1))),
    m.RowDescription(()),
    m.DataRow((b"1", None, b"", b"\xff" * 300)),
    m.DataRow(()),
    m.CommandComplete("SELECT 3"),
    m.ErrorResponse({"S": "ERROR", "V": "ERROR", "C": "42501", "M": ODD, "P": "7"}),
    m.NoticeResponse({"S": "NOTICE", "C": "00000", "M": "hello"}),
    m.NotificationResponse(77, "chan", "payload"),
    m.NotificationResponse(77, "chan", ""),
    m.ParameterDescription((23, 25, 0xFFFFFFFF)),
    m.ParameterDescription(()),
    m.CopyInResponse(0, (0, 0, 0)),
    m.CopyOutResponse(1, (1, 1)),
    m.CopyBothResponse(0, ()),
    m.EmptyQueryResponse(),
    m.NoData(),
    m.ParseComplete(),
    m.BindComplete(),
    m.CloseComplete(),
    m.PortalSuspended(),
    m.NegotiateProtocolVersion(0, ("_pq_.foo", "_pq_.bar")),
    m.FunctionCallResponse(b"result"),
    m.FunctionCallResponse(None),
    m.CopyData(b"out\n"),
    m.CopyDone(),
]


def _one(raw: bytes, *, startup: bool = False) -> tuple[int, bytes, bytes]:
    r = MessageReader(startup=startup)
    r.feed(raw)
    msg = r.next_message()
    assert msg is not None and r.buffered == 0
    assert msg[2] == raw
    return msg


@pytest.mark.parametrize("msg", STARTUP, ids=lambda x: type(x).__name__)
def test_startup_roundtrip(msg: object) -> None:
    t, body, _ = _one(w.encode(msg), startup=True)
    assert t == 0
    assert f.decode_frontend(t, body) == msg


@pytest.mark.parametrize("msg", FRONTEND, ids=lambda x: type(x).__name__)
def test_frontend_roundtrip(msg: object) -> None:
    raw = w.encode(msg)
    t, body, _ = _one(raw)
    decoded = f.decode_frontend(t, body)
    assert decoded == msg
    assert w.encode(decoded) == raw


@pytest.mark.parametrize("msg", BACKEND, ids=lambda x: type(x).__name__)
def test_backend_roundtrip(msg: object) -> None:
    raw = w.encode(msg)
    t, body, _ = _one(raw)
    decoded = b.decode_backend(t, body)
    assert decoded == msg
    assert w.encode(decoded) == raw


def test_all_message_classes_are_covered() -> None:
    covered = {type(x) for x in STARTUP + FRONTEND + BACKEND}
    covered |= {m.SASLInitialResponse, m.SASLResponse}  # tested below ('p' needs context)
    every = {getattr(m, name) for name in m.__all__ if isinstance(getattr(m, name), type)}
    every.discard(m.Field)
    assert every - covered == set()


# -- the specific decoder signatures the engine uses ----------------------------------------


def test_sasl_initial_and_response() -> None:
    raw = w.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc")
    t, body, _ = _one(raw)
    assert t == c.SASL_INITIAL_RESPONSE
    assert f.decode_sasl_initial(body) == ("SCRAM-SHA-256", b"n,,n=,r=abc")
    assert w.encode(f.decode_sasl_initial_message(body)) == raw
    _, body, _ = _one(w.sasl_initial_response("X", None))
    assert f.decode_sasl_initial(body) == ("X", None)
    _, body, _ = _one(w.sasl_response(b"c=biws,r=abc,p=xyz"))
    assert f.decode_sasl_response(body) == m.SASLResponse(b"c=biws,r=abc,p=xyz")
    assert f.decode_password(body) == b"c=biws,r=abc,p=xyz"


def test_cleartext_password() -> None:
    _, body, _ = _one(w.password_message("s3cret"))
    assert f.decode_password(body) == b"s3cret\0"
    assert f.decode_cleartext_password(body) == "s3cret"
    with pytest.raises(ProtocolError):
        f.decode_cleartext_password(b"a\0b\0")


def test_sasl_mechanisms() -> None:
    _, body, _ = _one(w.authentication_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))
    auth = b.decode_authentication(body)
    assert auth.code == c.AUTH_SASL
    assert b.decode_sasl_mechanisms(auth.data) == ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")
    with pytest.raises(ProtocolError):
        b.decode_sasl_mechanisms(b"SCRAM-SHA-256\0")


def test_data_row_and_row_description_shapes() -> None:
    _, body, _ = _one(w.data_row([b"a", None]))
    assert b.decode_data_row(body) == [b"a", None]
    _, body, _ = _one(w.row_description([m.Field("x", type_oid=23, type_size=4)]))
    fields = b.decode_row_description(body)
    assert isinstance(fields, tuple) and fields[0].name == "x" and fields[0].type_oid == 23


def test_error_response_writer_fields() -> None:
    raw = w.error_response("FATAL", "28P01", "denied", detail="why", hint="ask", fields={"P": "3"})
    t, body, _ = _one(raw)
    assert t == c.ERROR_RESPONSE
    assert b.decode_fields(body) == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "28P01",
        "M": "denied",
        "D": "why",
        "H": "ask",
        "P": "3",
    }
    t, body, _ = _one(w.notice_response("WARNING", "01000", "careful"))
    assert t == c.NOTICE_RESPONSE and b.decode_notice_response(body).message == "careful"


def test_fixed_writers() -> None:
    assert w.authentication_ok() == b"R\0\0\0\x08\0\0\0\0"
    assert w.ready_for_query("I") == b"Z\0\0\0\x05I"
    assert w.sync() == b"S\0\0\0\x04"
    assert w.terminate() == b"X\0\0\0\x04"
    assert w.ssl_request() == b"\0\0\0\x08\x04\xd2\x16\x2f"
    assert w.empty_query_response() == b"I\0\0\0\x04"
    assert w.copy_done() == b"c\0\0\0\x04"
    assert w.flush() == b"H\0\0\0\x04"
    assert b.decode_authentication(_one(w.authentication_md5(b"abcd"))[1]).data == b"abcd"
    assert b.decode_authentication(_one(w.authentication_cleartext())[1]).code == 3
    assert w.encode(m.Execute()) == w.execute()
    assert w.describe("P") == w.encode(m.Describe("P", ""))


@pytest.mark.parametrize(
    ("tag", "rows"),
    [
        ("SELECT 5", 5),
        ("INSERT 0 12", 12),
        ("UPDATE 0", 0),
        ("DELETE 3", 3),
        ("MERGE 2", 2),
        ("FETCH 10", 10),
        ("MOVE 1", 1),
        ("COPY 100", 100),
        ("CREATE TABLE", None),
        ("BEGIN", None),
        ("SELECT", None),
        ("SELECT x", None),
        ("INSERT 0", None),
    ],
)
def test_rows_from_tag(tag: str, rows: int | None) -> None:
    assert b.rows_from_tag(tag) == rows


# -- strictness: the gateway must not read a message differently from the server -------------


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (f.decode_query, b"SELECT 1"),  # unterminated
        (f.decode_query, b"SELECT 1\0; DROP TABLE x\0"),  # smuggled second string
        (f.decode_parse, b"s\0q\0\0\x02\0\0\0\x17"),  # 2 oids promised, 1 given
        (f.decode_bind, b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"),  # length -2
        (f.decode_bind, b"\0\0\0\0\0\x01\0\0\0\x09abc\0\0"),  # value overruns
        (f.decode_bind, b"\0\0\0\x02\0\0\0\0\0\x01\0\0\0\0\0\0"),  # 2 formats, 1 param
        (f.decode_describe, b"X\0"),
        (f.decode_close, b""),
        (f.decode_sync, b"\0"),
        (f.decode_execute, b"p\0\0\0"),
        (f.decode_startup, b"\0\2\0\0user\0x\0\0"),  # protocol 2.0
        (f.decode_startup, b"\0\3\0\0user\0x\0"),  # no final terminator
        (f.decode_startup, b"\x04\xd2\x16\x2f\0"),  # SSLRequest with trailing byte
        (b.decode_data_row, b"\0\x01\0\0\0\x05ab"),
        (b.decode_data_row, b"\0\x01\0\0\0\x01ab"),  # trailing byte
        (b.decode_data_row, b"\0"),
        (b.decode_data_row, b"\0\x01\xff\xff\xff\xf0"),
        (b.decode_ready_for_query, b"X"),
        (b.decode_row_description, b"\0\x01id\0\0\0"),
        (b.decode_fields, b"SERROR\0"),
        (b.decode_authentication, b"\0\0\0\x05ab"),
        (b.decode_authentication, b"\0\0"),
    ],
)
def test_malformed_bodies_raise_protocol_error(decode, body: bytes) -> None:  # noqa: ANN001
    with pytest.raises(ProtocolError):
        decode(body)


def test_unknown_types_raise() -> None:
    with pytest.raises(ProtocolError):
        f.decode_frontend(ord("z"), b"")
    with pytest.raises(ProtocolError):
        b.decode_backend(ord("z"), b"")


def test_writers_refuse_nul_in_strings() -> None:
    with pytest.raises(ValueError):
        w.query("SELECT 1\0DROP TABLE x")
    with pytest.raises(ValueError):
        w.error_response("ERROR", "42501", "a\0b")


def test_strings_survive_non_utf8_bytes() -> None:
    raw_sql = b"SELECT '\xe9t\xe9'\0"  # latin-1 client encoding
    q = f.decode_query(raw_sql)
    assert w.query(q.sql)[5:] == raw_sql
