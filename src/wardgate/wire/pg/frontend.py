"""Decoders for frontend (client to server) PostgreSQL messages.

Theory of operation: each ``decode_*`` takes a message *body* (what follows the type byte
and length, as ``MessageReader.next_message`` returns it) and gives a message object from
``messages``. Decoders are as strict as the PostgreSQL server itself: a string must be
NUL-terminated, counts must match, and trailing bytes are an error (the server's
``pq_getmsgend``), so the gateway never reads a message differently from the target.
Anything malformed raises ``ProtocolError``; no other exception escapes.

``decode_frontend(type_byte, body)`` dispatches on the type byte for the typed messages.
'p' messages (password, SASL initial response, SASL response) cannot be told apart without
the authentication state, so the dispatcher returns ``PasswordMessage`` and the engine calls
``decode_sasl_initial`` / ``decode_sasl_response`` when it knows which one it expects.
"""

from __future__ import annotations

from collections.abc import Callable

from wardgate.wire.pg import constants as c
from wardgate.wire.pg._codec import (
    ENCODING,
    ERRORS,
    as_bytes,
    decoder,
    expect_end,
    read_cstr,
    read_i16,
    read_i16_array,
    read_i32,
    read_u32,
    read_u32_array,
    read_values,
)
from wardgate.wire.pg.framing import ProtocolError
from wardgate.wire.pg.messages import (
    Bind,
    CancelRequest,
    Close,
    CopyData,
    CopyDone,
    CopyFail,
    Describe,
    Execute,
    Flush,
    FrontendMessage,
    FunctionCall,
    GSSENCRequest,
    Parse,
    PasswordMessage,
    Query,
    SASLInitialResponse,
    SASLResponse,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
)

__all__ = [
    "decode_startup",
    "decode_query",
    "query_text",
    "decode_parse",
    "decode_bind",
    "decode_execute",
    "decode_describe",
    "decode_close",
    "decode_sync",
    "decode_flush",
    "decode_terminate",
    "decode_password",
    "decode_cleartext_password",
    "decode_sasl_initial",
    "decode_sasl_initial_message",
    "decode_sasl_response",
    "decode_function_call",
    "decode_copy_data",
    "decode_copy_done",
    "decode_copy_fail",
    "decode_frontend",
    "is_utf8",
]

Buf = bytes | bytearray | memoryview


def is_utf8(text: str) -> bool:
    """False when the codec kept bytes that are not UTF-8 (as lone surrogates): such a
    text cannot be recorded, matched or handed on as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@decoder("startup")
def decode_startup(
    body: Buf,
) -> StartupMessage | SSLRequest | GSSENCRequest | CancelRequest:
    """An untyped startup packet body (after its Int32 length)."""
    body = as_bytes(body)
    code, pos = read_u32(body, 0)
    if code == c.SSL_REQUEST_CODE:
        expect_end(body, pos, "SSLRequest")
        return SSLRequest()
    if code == c.GSSENC_REQUEST_CODE:
        expect_end(body, pos, "GSSENCRequest")
        return GSSENCRequest()
    if code == c.CANCEL_REQUEST_CODE:
        pid, pos = read_i32(body, pos)
        secret, pos = read_i32(body, pos)
        expect_end(body, pos, "CancelRequest")
        return CancelRequest(pid, secret)
    major = code >> 16
    if major != 3:
        raise ProtocolError(
            f"unsupported frontend protocol {major}.{code & 0xFFFF}: server supports 3.0 to 3.0"
        )
    params: dict[str, str] = {}
    while True:
        if pos >= len(body):
            raise ProtocolError("startup packet is missing its final terminator")
        if body[pos] == 0:
            pos += 1
            break
        name, pos = read_cstr(body, pos)
        value, pos = read_cstr(body, pos)
        params[name] = value
    expect_end(body, pos, "StartupMessage")
    return StartupMessage(code, params)


@decoder("Query")
def decode_query(body: Buf) -> Query:
    body = as_bytes(body)
    sql, pos = read_cstr(body, 0)
    expect_end(body, pos, "Query")
    return Query(sql)


def query_text(body: Buf) -> str:
    """`decode_query(body).sql` for the hot path: one check and one decode when the body
    is well formed (one terminating NUL); anything else goes through `decode_query`."""
    if type(body) is bytes and body and body.find(b"\0") == len(body) - 1:
        return body[:-1].decode(ENCODING, ERRORS)
    return decode_query(body).sql


@decoder("Parse")
def decode_parse(body: Buf) -> Parse:
    body = as_bytes(body)
    name, pos = read_cstr(body, 0)
    query, pos = read_cstr(body, pos)
    oids, pos = read_u32_array(body, pos)
    expect_end(body, pos, "Parse")
    return Parse(name, query, oids)


@decoder("Bind")
def decode_bind(body: Buf) -> Bind:
    body = as_bytes(body)
    portal, pos = read_cstr(body, 0)
    statement, pos = read_cstr(body, pos)
    param_formats, pos = read_i16_array(body, pos)
    params, pos = read_values(body, pos)
    result_formats, pos = read_i16_array(body, pos)
    expect_end(body, pos, "Bind")
    if len(param_formats) > 1 and len(param_formats) != len(params):
        raise ProtocolError(
            f"bind message has {len(param_formats)} parameter formats but {len(params)} parameters"
        )
    return Bind(portal, statement, param_formats, params, result_formats)


@decoder("Execute")
def decode_execute(body: Buf) -> Execute:
    body = as_bytes(body)
    portal, pos = read_cstr(body, 0)
    max_rows, pos = read_i32(body, pos)
    expect_end(body, pos, "Execute")
    return Execute(portal, max_rows)


def _kind_and_name(body: bytes, what: str) -> tuple[str, str]:
    if not body:
        raise ProtocolError(f"empty {what} message")
    kind = chr(body[0])
    if kind not in ("S", "P"):
        raise ProtocolError(f"invalid {what} message subtype {body[0]}")
    name, pos = read_cstr(body, 1)
    expect_end(body, pos, what)
    return kind, name


@decoder("Describe")
def decode_describe(body: Buf) -> Describe:
    return Describe(*_kind_and_name(as_bytes(body), "Describe"))


@decoder("Close")
def decode_close(body: Buf) -> Close:
    return Close(*_kind_and_name(as_bytes(body), "Close"))


def _empty(body: Buf, what: str) -> None:
    if len(body):
        raise ProtocolError(f"{what} message has {len(body)} unexpected bytes")


def decode_sync(body: Buf) -> Sync:
    _empty(body, "Sync")
    return Sync()


def decode_flush(body: Buf) -> Flush:
    _empty(body, "Flush")
    return Flush()


def decode_terminate(body: Buf) -> Terminate:
    _empty(body, "Terminate")
    return Terminate()


def decode_copy_done(body: Buf) -> CopyDone:
    _empty(body, "CopyDone")
    return CopyDone()


def decode_password(body: Buf) -> bytes:
    """The raw body of a 'p' message (password, md5 hash, GSS or SASL data)."""
    return as_bytes(body)


@decoder("PasswordMessage")
def decode_cleartext_password(body: Buf) -> str:
    """A cleartext (or "md5...") password: one C string filling the body."""
    body = as_bytes(body)
    password, pos = read_cstr(body, 0)
    expect_end(body, pos, "PasswordMessage")
    return password


@decoder("SASLInitialResponse")
def decode_sasl_initial(body: Buf) -> tuple[str, bytes | None]:
    """-> (mechanism, data); data is None when the client sent length -1."""
    msg = decode_sasl_initial_message(body)
    return msg.mechanism, msg.data


@decoder("SASLInitialResponse")
def decode_sasl_initial_message(body: Buf) -> SASLInitialResponse:
    body = as_bytes(body)
    mechanism, pos = read_cstr(body, 0)
    length, pos = read_i32(body, pos)
    if length == -1:
        expect_end(body, pos, "SASLInitialResponse")
        return SASLInitialResponse(mechanism, None)
    if length < 0 or pos + length != len(body):
        raise ProtocolError("SASLInitialResponse length does not match its data")
    return SASLInitialResponse(mechanism, body[pos:])


def decode_sasl_response(body: Buf) -> SASLResponse:
    return SASLResponse(as_bytes(body))


@decoder("FunctionCall")
def decode_function_call(body: Buf) -> FunctionCall:
    body = as_bytes(body)
    oid, pos = read_u32(body, 0)
    arg_formats, pos = read_i16_array(body, pos)
    args, pos = read_values(body, pos)
    result_format, pos = read_i16(body, pos)
    expect_end(body, pos, "FunctionCall")
    return FunctionCall(oid, arg_formats, args, result_format)


def decode_copy_data(body: Buf) -> CopyData:
    return CopyData(as_bytes(body))


@decoder("CopyFail")
def decode_copy_fail(body: Buf) -> CopyFail:
    body = as_bytes(body)
    message, pos = read_cstr(body, 0)
    expect_end(body, pos, "CopyFail")
    return CopyFail(message)


def _password(body: Buf) -> PasswordMessage:
    return PasswordMessage(as_bytes(body))


_FRONTEND: dict[int, Callable[[Buf], FrontendMessage]] = {
    c.QUERY: decode_query,
    c.PARSE: decode_parse,
    c.BIND: decode_bind,
    c.EXECUTE: decode_execute,
    c.DESCRIBE: decode_describe,
    c.CLOSE: decode_close,
    c.SYNC: decode_sync,
    c.FLUSH: decode_flush,
    c.TERMINATE: decode_terminate,
    c.PASSWORD_MESSAGE: _password,
    c.FUNCTION_CALL: decode_function_call,
    c.COPY_DATA: decode_copy_data,
    c.COPY_DONE: decode_copy_done,
    c.COPY_FAIL: decode_copy_fail,
}


def decode_frontend(type_byte: int, body: Buf) -> FrontendMessage:
    """Decode any frontend message; ``type_byte`` 0 means an untyped startup packet."""
    if type_byte == c.UNTYPED:
        return decode_startup(body)
    fn = _FRONTEND.get(type_byte)
    if fn is None:
        raise ProtocolError(f"invalid frontend message type {type_byte}")
    return fn(body)
