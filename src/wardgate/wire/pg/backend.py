"""Decoders for backend (server to client) PostgreSQL messages.

Theory of operation: like ``frontend``, each ``decode_*`` takes a message body and returns
a value; malformed input raises ``ProtocolError`` and nothing else. ``decode_data_row`` runs
once per result row, so it is written for speed: one bounds check per column, slices of the
body as values, no per-byte work. ``decode_backend(type_byte, body)`` dispatches every
backend type to a message object from ``messages`` (``DataRow`` wraps the row list).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from wardgate.wire.pg import constants as c
from wardgate.wire.pg._codec import (
    ENCODING,
    ERRORS,
    as_bytes,
    decoder,
    expect_end,
    read_cstr,
    read_i16_array,
    read_i32,
    read_u16,
    read_u32,
    read_u32_array,
)
from wardgate.wire.pg.framing import ProtocolError
from wardgate.wire.pg.messages import (
    Authentication,
    BackendKeyData,
    BackendMessage,
    BindComplete,
    CloseComplete,
    CommandComplete,
    CopyBothResponse,
    CopyData,
    CopyDone,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    Field,
    FunctionCallResponse,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    ParseComplete,
    PortalSuspended,
    ReadyForQuery,
    RowDescription,
)

__all__ = [
    "decode_authentication",
    "decode_sasl_mechanisms",
    "decode_parameter_status",
    "decode_backend_key_data",
    "decode_ready_for_query",
    "decode_row_description",
    "decode_data_row",
    "decode_command_complete",
    "command_tag",
    "rows_from_tag",
    "decode_fields",
    "decode_error_response",
    "decode_notice_response",
    "decode_notification_response",
    "decode_parameter_description",
    "decode_copy_in_response",
    "decode_copy_out_response",
    "decode_copy_both_response",
    "decode_negotiate_protocol_version",
    "decode_function_call_response",
    "decode_backend",
]

Buf = bytes | bytearray | memoryview

_i32_from = struct.Struct("!i").unpack_from
_FIELD = struct.Struct("!IhIhih")  # table oid, attnum, type oid, typlen, typmod, format
_field_from = _FIELD.unpack_from
_FIELD_SIZE = _FIELD.size


@decoder("Authentication")
def decode_authentication(body: Buf) -> Authentication:
    body = as_bytes(body)
    code, pos = read_u32(body, 0)
    data = body[pos:]
    if code == c.AUTH_MD5 and len(data) != 4:
        raise ProtocolError("AuthenticationMD5Password must carry a 4-byte salt")
    if code in (c.AUTH_OK, c.AUTH_CLEARTEXT) and data:
        raise ProtocolError(f"Authentication code {code} has unexpected trailing bytes")
    return Authentication(code, data)


@decoder("AuthenticationSASL")
def decode_sasl_mechanisms(data: Buf) -> tuple[str, ...]:
    """The mechanism list of AuthenticationSASL (``Authentication.data``)."""
    data = as_bytes(data)
    out: list[str] = []
    pos = 0
    while True:
        if pos >= len(data):
            raise ProtocolError("SASL mechanism list is missing its terminator")
        if data[pos] == 0:
            pos += 1
            break
        name, pos = read_cstr(data, pos)
        out.append(name)
    expect_end(data, pos, "AuthenticationSASL")
    return tuple(out)


@decoder("ParameterStatus")
def decode_parameter_status(body: Buf) -> ParameterStatus:
    body = as_bytes(body)
    name, pos = read_cstr(body, 0)
    value, pos = read_cstr(body, pos)
    expect_end(body, pos, "ParameterStatus")
    return ParameterStatus(name, value)


@decoder("BackendKeyData")
def decode_backend_key_data(body: Buf) -> BackendKeyData:
    body = as_bytes(body)
    pid, pos = read_i32(body, 0)
    secret, pos = read_i32(body, pos)
    expect_end(body, pos, "BackendKeyData")
    return BackendKeyData(pid, secret)


def decode_ready_for_query(body: Buf) -> ReadyForQuery:
    if len(body) != 1 or body[0] not in b"ITE":
        raise ProtocolError("invalid ReadyForQuery message")
    return ReadyForQuery(chr(body[0]))


@decoder("RowDescription")
def decode_row_description(body: Buf) -> tuple[Field, ...]:
    body = as_bytes(body)
    n, pos = read_u16(body, 0)
    size = len(body)
    fields: list[Field] = []
    for _ in range(n):
        name, pos = read_cstr(body, pos)
        if pos + _FIELD_SIZE > size:
            raise ProtocolError("RowDescription message is truncated")
        fields.append(Field(name, *_field_from(body, pos)))
        pos += _FIELD_SIZE
    expect_end(body, pos, "RowDescription")
    return tuple(fields)


def decode_data_row(body: Buf) -> list[bytes | None]:
    """The column values of a DataRow; None is SQL NULL. Runs once per row: keep it lean."""
    if type(body) is not bytes:
        body = bytes(body)
    size = len(body)
    if size < 2:
        raise ProtocolError("DataRow message is truncated")
    n = (body[0] << 8) | body[1]
    pos = 2
    out: list[bytes | None] = [None] * n
    i32 = _i32_from
    for i in range(n):
        if pos + 4 > size:
            raise ProtocolError("DataRow message is truncated")
        length = i32(body, pos)[0]
        pos += 4
        if length >= 0:
            end = pos + length
            if end > size:
                raise ProtocolError("DataRow column overruns the message")
            out[i] = body[pos:end]
            pos = end
        elif length != -1:
            raise ProtocolError(f"invalid DataRow column length {length}")
    if pos != size:
        raise ProtocolError(f"DataRow message has {size - pos} unexpected trailing bytes")
    return out


@decoder("CommandComplete")
def decode_command_complete(body: Buf) -> CommandComplete:
    body = as_bytes(body)
    tag, pos = read_cstr(body, 0)
    expect_end(body, pos, "CommandComplete")
    return CommandComplete(tag)


def command_tag(body: Buf) -> str:
    """`decode_command_complete(body).tag` without building the message: a relay reads
    one tag per statement. Anything but one terminated string takes the full decoder
    (and its ProtocolError)."""
    if type(body) is bytes and body and body.find(b"\0") == len(body) - 1:
        return body[:-1].decode(ENCODING, ERRORS)
    return decode_command_complete(body).tag


_ROW_TAGS = frozenset({"SELECT", "UPDATE", "DELETE", "MERGE", "FETCH", "MOVE", "COPY"})


def rows_from_tag(tag: str) -> int | None:
    """Rows affected/returned per a CommandComplete tag ("INSERT 0 5" -> 5), else None."""
    parts = tag.split(" ")
    if len(parts) == 3 and parts[0] == "INSERT":
        count = parts[2]
    elif len(parts) == 2 and parts[0] in _ROW_TAGS:
        count = parts[1]
    else:
        return None
    return int(count) if count.isascii() and count.isdigit() else None


@decoder("ErrorResponse")
def decode_fields(body: Buf) -> dict[str, str]:
    """ErrorResponse/NoticeResponse body -> {field code char: value}."""
    body = as_bytes(body)
    fields: dict[str, str] = {}
    pos = 0
    size = len(body)
    while True:
        if pos >= size:
            raise ProtocolError("error/notice fields are missing their terminator")
        code = body[pos]
        if code == 0:
            pos += 1
            break
        value, pos = read_cstr(body, pos + 1)
        fields[chr(code)] = value
    expect_end(body, pos, "ErrorResponse")
    return fields


def decode_error_response(body: Buf) -> ErrorResponse:
    return ErrorResponse(decode_fields(body))


def decode_notice_response(body: Buf) -> NoticeResponse:
    return NoticeResponse(decode_fields(body))


@decoder("NotificationResponse")
def decode_notification_response(body: Buf) -> NotificationResponse:
    body = as_bytes(body)
    pid, pos = read_i32(body, 0)
    channel, pos = read_cstr(body, pos)
    payload, pos = read_cstr(body, pos)
    expect_end(body, pos, "NotificationResponse")
    return NotificationResponse(pid, channel, payload)


@decoder("ParameterDescription")
def decode_parameter_description(body: Buf) -> ParameterDescription:
    body = as_bytes(body)
    oids, pos = read_u32_array(body, 0)
    expect_end(body, pos, "ParameterDescription")
    return ParameterDescription(oids)


def _copy_response(body: Buf, what: str) -> tuple[int, tuple[int, ...]]:
    body = as_bytes(body)
    if not body:
        raise ProtocolError(f"empty {what} message")
    fmt = body[0]
    formats, pos = read_i16_array(body, 1)
    expect_end(body, pos, what)
    return fmt, formats


@decoder("CopyInResponse")
def decode_copy_in_response(body: Buf) -> CopyInResponse:
    return CopyInResponse(*_copy_response(body, "CopyInResponse"))


@decoder("CopyOutResponse")
def decode_copy_out_response(body: Buf) -> CopyOutResponse:
    return CopyOutResponse(*_copy_response(body, "CopyOutResponse"))


@decoder("CopyBothResponse")
def decode_copy_both_response(body: Buf) -> CopyBothResponse:
    return CopyBothResponse(*_copy_response(body, "CopyBothResponse"))


@decoder("NegotiateProtocolVersion")
def decode_negotiate_protocol_version(body: Buf) -> NegotiateProtocolVersion:
    body = as_bytes(body)
    newest, pos = read_u32(body, 0)
    n, pos = read_u32(body, pos)
    if n > len(body):
        raise ProtocolError("NegotiateProtocolVersion option count exceeds the message")
    options: list[str] = []
    for _ in range(n):
        name, pos = read_cstr(body, pos)
        options.append(name)
    expect_end(body, pos, "NegotiateProtocolVersion")
    return NegotiateProtocolVersion(newest, tuple(options))


@decoder("FunctionCallResponse")
def decode_function_call_response(body: Buf) -> FunctionCallResponse:
    body = as_bytes(body)
    length, pos = read_i32(body, 0)
    if length == -1:
        expect_end(body, pos, "FunctionCallResponse")
        return FunctionCallResponse(None)
    if length < 0 or pos + length != len(body):
        raise ProtocolError("FunctionCallResponse length does not match its data")
    return FunctionCallResponse(body[pos:])


def _empty(cls: type) -> Callable[[Buf], BackendMessage]:
    name = cls.__name__
    instance = cls()

    def decode(body: Buf) -> BackendMessage:
        if len(body):
            raise ProtocolError(f"{name} message has {len(body)} unexpected bytes")
        return instance

    return decode


_BACKEND: dict[int, Callable[[Buf], BackendMessage]] = {
    c.AUTHENTICATION: decode_authentication,
    c.PARAMETER_STATUS: decode_parameter_status,
    c.BACKEND_KEY_DATA: decode_backend_key_data,
    c.READY_FOR_QUERY: decode_ready_for_query,
    c.ROW_DESCRIPTION: lambda b: RowDescription(decode_row_description(b)),
    c.DATA_ROW: lambda b: DataRow(tuple(decode_data_row(b))),
    c.COMMAND_COMPLETE: decode_command_complete,
    c.ERROR_RESPONSE: decode_error_response,
    c.NOTICE_RESPONSE: decode_notice_response,
    c.NOTIFICATION_RESPONSE: decode_notification_response,
    c.PARAMETER_DESCRIPTION: decode_parameter_description,
    c.COPY_IN_RESPONSE: decode_copy_in_response,
    c.COPY_OUT_RESPONSE: decode_copy_out_response,
    c.COPY_BOTH_RESPONSE: decode_copy_both_response,
    c.EMPTY_QUERY_RESPONSE: _empty(EmptyQueryResponse),
    c.NO_DATA: _empty(NoData),
    c.PARSE_COMPLETE: _empty(ParseComplete),
    c.BIND_COMPLETE: _empty(BindComplete),
    c.CLOSE_COMPLETE: _empty(CloseComplete),
    c.PORTAL_SUSPENDED: _empty(PortalSuspended),
    c.NEGOTIATE_PROTOCOL_VERSION: decode_negotiate_protocol_version,
    c.FUNCTION_CALL_RESPONSE: decode_function_call_response,
    c.COPY_DATA: lambda b: CopyData(as_bytes(b)),
    c.COPY_DONE: _empty(CopyDone),
}


def decode_backend(type_byte: int, body: Buf) -> BackendMessage:
    """Decode any backend message into its message object."""
    fn = _BACKEND.get(type_byte)
    if fn is None:
        raise ProtocolError(f"invalid backend message type {type_byte}")
    return fn(body)
