"""Encoders: build PostgreSQL protocol 3.0 messages as bytes.

Theory of operation: each function returns one complete message (type byte, Int32 length,
body), ready to write to a socket. Strings are encoded as UTF-8 with surrogateescape, the
inverse of the decoders, so ``decode(encode(m)) == m``. A string containing NUL cannot be a
C string and raises ``ValueError``: silently truncating it would let the gateway and the
server read different messages. ``encode(message)`` encodes any message object from
``messages``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from wardgate.wire.pg import constants as c
from wardgate.wire.pg import messages as m
from wardgate.wire.pg._codec import cstr, frame, pack_i16, pack_i32, pack_u32

__all__ = [
    # backend
    "authentication",
    "authentication_ok",
    "authentication_cleartext",
    "authentication_md5",
    "authentication_sasl",
    "authentication_sasl_continue",
    "authentication_sasl_final",
    "parameter_status",
    "backend_key_data",
    "ready_for_query",
    "row_description",
    "data_row",
    "command_complete",
    "error_response",
    "notice_response",
    "fields_message",
    "notification_response",
    "parameter_description",
    "copy_in_response",
    "copy_out_response",
    "copy_both_response",
    "empty_query_response",
    "no_data",
    "parse_complete",
    "bind_complete",
    "close_complete",
    "portal_suspended",
    "negotiate_protocol_version",
    "function_call_response",
    # frontend
    "startup_message",
    "ssl_request",
    "gssenc_request",
    "cancel_request",
    "password_message",
    "sasl_initial_response",
    "sasl_response",
    "query",
    "parse",
    "bind",
    "execute",
    "describe",
    "close",
    "sync",
    "flush",
    "terminate",
    "function_call",
    "copy_data",
    "copy_done",
    "copy_fail",
    "encode",
]


def _i16_array(values: Sequence[int]) -> bytes:
    return len(values).to_bytes(2, "big") + b"".join(pack_i16(v) for v in values)


def _values(values: Sequence[bytes | None]) -> bytes:
    parts = [len(values).to_bytes(2, "big")]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(pack_i32(len(v)))
            parts.append(bytes(v))
    return b"".join(parts)


# -- backend ---------------------------------------------------------------------------------


def authentication(code: int, data: bytes = b"") -> bytes:
    return frame(b"R", pack_u32(code) + data)


def authentication_ok() -> bytes:
    return authentication(c.AUTH_OK)


def authentication_cleartext() -> bytes:
    return authentication(c.AUTH_CLEARTEXT)


def authentication_md5(salt: bytes) -> bytes:
    if len(salt) != 4:
        raise ValueError("the md5 salt is 4 bytes")
    return authentication(c.AUTH_MD5, salt)


def authentication_sasl(mechanisms: Iterable[str]) -> bytes:
    return authentication(c.AUTH_SASL, b"".join(cstr(x) for x in mechanisms) + b"\0")


def authentication_sasl_continue(data: bytes) -> bytes:
    return authentication(c.AUTH_SASL_CONTINUE, data)


def authentication_sasl_final(data: bytes) -> bytes:
    return authentication(c.AUTH_SASL_FINAL, data)


def parameter_status(name: str, value: str) -> bytes:
    return frame(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return frame(b"K", pack_i32(pid) + pack_i32(secret))


def ready_for_query(status: str) -> bytes:
    if status not in ("I", "T", "E"):
        raise ValueError(f"invalid transaction status {status!r}")
    return frame(b"Z", status.encode())


def row_description(fields: Sequence[m.Field]) -> bytes:
    parts = [len(fields).to_bytes(2, "big")]
    for f in fields:
        parts.append(cstr(f.name))
        parts.append(
            pack_u32(f.table_oid)
            + pack_i16(f.column_attnum)
            + pack_u32(f.type_oid)
            + pack_i16(f.type_size)
            + pack_i32(f.type_modifier)
            + pack_i16(f.format)
        )
    return frame(b"T", b"".join(parts))


def data_row(values: Sequence[bytes | None]) -> bytes:
    return frame(b"D", _values(values))


def command_complete(tag: str) -> bytes:
    return frame(b"C", cstr(tag))


def fields_message(type_byte: bytes, fields: Mapping[str, str]) -> bytes:
    parts = []
    for code, value in fields.items():
        if len(code) != 1 or code == "\0":
            raise ValueError(f"invalid error field code {code!r}")
        parts.append(code.encode() + cstr(value))
    parts.append(b"\0")
    return frame(type_byte, b"".join(parts))


def _error_fields(
    severity: str,
    code: str,
    message: str,
    detail: str | None,
    hint: str | None,
    fields: Mapping[str, str] | None,
) -> dict[str, str]:
    out = {"S": severity, "V": severity, "C": code, "M": message}
    if detail is not None:
        out["D"] = detail
    if hint is not None:
        out["H"] = hint
    if fields:
        out.update(fields)
    return out


def error_response(
    severity: str,
    code: str,
    message: str,
    *,
    detail: str | None = None,
    hint: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> bytes:
    """ErrorResponse with S, V (same as S), C, M, then D, H and any extra ``fields``."""
    return fields_message(b"E", _error_fields(severity, code, message, detail, hint, fields))


def notice_response(
    severity: str,
    code: str,
    message: str,
    *,
    detail: str | None = None,
    hint: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> bytes:
    return fields_message(b"N", _error_fields(severity, code, message, detail, hint, fields))


def notification_response(pid: int, channel: str, payload: str = "") -> bytes:
    return frame(b"A", pack_i32(pid) + cstr(channel) + cstr(payload))


def parameter_description(type_oids: Sequence[int]) -> bytes:
    return frame(b"t", len(type_oids).to_bytes(2, "big") + b"".join(map(pack_u32, type_oids)))


def _copy_response(type_byte: bytes, format: int, column_formats: Sequence[int]) -> bytes:
    return frame(type_byte, bytes([format]) + _i16_array(column_formats))


def copy_in_response(format: int = 0, column_formats: Sequence[int] = ()) -> bytes:
    return _copy_response(b"G", format, column_formats)


def copy_out_response(format: int = 0, column_formats: Sequence[int] = ()) -> bytes:
    return _copy_response(b"H", format, column_formats)


def copy_both_response(format: int = 0, column_formats: Sequence[int] = ()) -> bytes:
    return _copy_response(b"W", format, column_formats)


_EMPTY = {t: frame(t, b"") for t in (b"I", b"n", b"1", b"2", b"3", b"s", b"S", b"H", b"X", b"c")}


def empty_query_response() -> bytes:
    return _EMPTY[b"I"]


def no_data() -> bytes:
    return _EMPTY[b"n"]


def parse_complete() -> bytes:
    return _EMPTY[b"1"]


def bind_complete() -> bytes:
    return _EMPTY[b"2"]


def close_complete() -> bytes:
    return _EMPTY[b"3"]


def portal_suspended() -> bytes:
    return _EMPTY[b"s"]


def negotiate_protocol_version(
    newest_minor: int, unrecognized_options: Sequence[str] = ()
) -> bytes:
    body = pack_u32(newest_minor) + pack_u32(len(unrecognized_options))
    return frame(b"v", body + b"".join(cstr(o) for o in unrecognized_options))


def function_call_response(value: bytes | None) -> bytes:
    if value is None:
        return frame(b"V", pack_i32(-1))
    return frame(b"V", pack_i32(len(value)) + value)


# -- frontend --------------------------------------------------------------------------------


def startup_message(params: Mapping[str, str], protocol: int = c.PROTOCOL_3_0) -> bytes:
    body = pack_u32(protocol)
    body += b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return pack_u32(len(body) + 4) + body


def ssl_request() -> bytes:
    return pack_u32(8) + pack_u32(c.SSL_REQUEST_CODE)


def gssenc_request() -> bytes:
    return pack_u32(8) + pack_u32(c.GSSENC_REQUEST_CODE)


def cancel_request(pid: int, secret: int) -> bytes:
    return pack_u32(16) + pack_u32(c.CANCEL_REQUEST_CODE) + pack_i32(pid) + pack_i32(secret)


def password_message(data: bytes | str) -> bytes:
    """A 'p' message. ``str`` is sent as a C string (cleartext or "md5..." password);
    ``bytes`` are sent as given (GSS/SASL data, or an already terminated password)."""
    return frame(b"p", cstr(data) if isinstance(data, str) else bytes(data))


def sasl_initial_response(mechanism: str, data: bytes | None) -> bytes:
    if data is None:
        return frame(b"p", cstr(mechanism) + pack_i32(-1))
    return frame(b"p", cstr(mechanism) + pack_i32(len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return frame(b"p", bytes(data))


def query(sql: str) -> bytes:
    return frame(b"Q", cstr(sql))


def parse(name: str = "", query: str = "", param_type_oids: Sequence[int] = ()) -> bytes:
    oids = len(param_type_oids).to_bytes(2, "big") + b"".join(map(pack_u32, param_type_oids))
    return frame(b"P", cstr(name) + cstr(query) + oids)


def bind(
    portal: str = "",
    statement: str = "",
    param_formats: Sequence[int] = (),
    params: Sequence[bytes | None] = (),
    result_formats: Sequence[int] = (),
) -> bytes:
    body = (
        cstr(portal)
        + cstr(statement)
        + _i16_array(param_formats)
        + _values(params)
        + _i16_array(result_formats)
    )
    return frame(b"B", body)


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return frame(b"E", cstr(portal) + pack_i32(max_rows))


def _kind(kind: str) -> bytes:
    if kind not in ("S", "P"):
        raise ValueError(f"kind must be 'S' or 'P', not {kind!r}")
    return kind.encode()


def describe(kind: str, name: str = "") -> bytes:
    return frame(b"D", _kind(kind) + cstr(name))


def close(kind: str, name: str = "") -> bytes:
    return frame(b"C", _kind(kind) + cstr(name))


def sync() -> bytes:
    return _EMPTY[b"S"]


def flush() -> bytes:
    return _EMPTY[b"H"]


def terminate() -> bytes:
    return _EMPTY[b"X"]


def function_call(
    oid: int,
    arg_formats: Sequence[int] = (),
    args: Sequence[bytes | None] = (),
    result_format: int = 0,
) -> bytes:
    body = pack_u32(oid) + _i16_array(arg_formats) + _values(args) + pack_i16(result_format)
    return frame(b"F", body)


def copy_data(data: bytes) -> bytes:
    return frame(b"d", bytes(data))


def copy_done() -> bytes:
    return _EMPTY[b"c"]


def copy_fail(message: str) -> bytes:
    return frame(b"f", cstr(message))


# -- encode any message object ---------------------------------------------------------------


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    m.StartupMessage: lambda x: startup_message(x.params, x.protocol),
    m.SSLRequest: lambda x: ssl_request(),
    m.GSSENCRequest: lambda x: gssenc_request(),
    m.CancelRequest: lambda x: cancel_request(x.pid, x.secret),
    m.Query: lambda x: query(x.sql),
    m.Parse: lambda x: parse(x.name, x.query, x.param_type_oids),
    m.Bind: lambda x: bind(x.portal, x.statement, x.param_formats, x.params, x.result_formats),
    m.Execute: lambda x: execute(x.portal, x.max_rows),
    m.Describe: lambda x: describe(x.kind, x.name),
    m.Close: lambda x: close(x.kind, x.name),
    m.Sync: lambda x: sync(),
    m.Flush: lambda x: flush(),
    m.Terminate: lambda x: terminate(),
    m.PasswordMessage: lambda x: password_message(x.data),
    m.SASLInitialResponse: lambda x: sasl_initial_response(x.mechanism, x.data),
    m.SASLResponse: lambda x: sasl_response(x.data),
    m.FunctionCall: lambda x: function_call(x.oid, x.arg_formats, x.args, x.result_format),
    m.CopyData: lambda x: copy_data(x.data),
    m.CopyDone: lambda x: copy_done(),
    m.CopyFail: lambda x: copy_fail(x.message),
    m.Authentication: lambda x: authentication(x.code, x.data),
    m.ParameterStatus: lambda x: parameter_status(x.name, x.value),
    m.BackendKeyData: lambda x: backend_key_data(x.pid, x.secret),
    m.ReadyForQuery: lambda x: ready_for_query(x.status),
    m.RowDescription: lambda x: row_description(x.fields),
    m.DataRow: lambda x: data_row(x.values),
    m.CommandComplete: lambda x: command_complete(x.tag),
    m.ErrorResponse: lambda x: fields_message(b"E", x.fields),
    m.NoticeResponse: lambda x: fields_message(b"N", x.fields),
    m.NotificationResponse: lambda x: notification_response(x.pid, x.channel, x.payload),
    m.ParameterDescription: lambda x: parameter_description(x.type_oids),
    m.CopyInResponse: lambda x: copy_in_response(x.format, x.column_formats),
    m.CopyOutResponse: lambda x: copy_out_response(x.format, x.column_formats),
    m.CopyBothResponse: lambda x: copy_both_response(x.format, x.column_formats),
    m.EmptyQueryResponse: lambda x: empty_query_response(),
    m.NoData: lambda x: no_data(),
    m.ParseComplete: lambda x: parse_complete(),
    m.BindComplete: lambda x: bind_complete(),
    m.CloseComplete: lambda x: close_complete(),
    m.PortalSuspended: lambda x: portal_suspended(),
    m.NegotiateProtocolVersion: lambda x: negotiate_protocol_version(
        x.newest_minor, x.unrecognized_options
    ),
    m.FunctionCallResponse: lambda x: function_call_response(x.value),
}


def encode(message: object) -> bytes:
    """Encode any message object from ``messages`` (inverse of the decoders)."""
    fn = _ENCODERS.get(type(message))
    if fn is None:
        raise TypeError(f"cannot encode {type(message).__name__}")
    return fn(message)
