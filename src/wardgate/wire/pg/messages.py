"""PostgreSQL protocol 3.0 messages as frozen, slotted dataclasses.

Theory of operation: one class per message kind, holding the decoded fields only. The raw
bytes live next to the message (``MessageReader.next_message`` returns them), so a message
that needs no change is forwarded as received and never re-encoded. Decoders live in
``frontend`` (client to server) and ``backend`` (server to client); ``writers.encode``
turns any of these objects back into bytes, and ``decode(encode(m)) == m`` for all of them.

Strings are decoded as UTF-8 with ``errors="surrogateescape"``: nothing is lost and
re-encoding gives the original bytes even for a client encoding other than UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    # startup packets
    "StartupMessage",
    "SSLRequest",
    "GSSENCRequest",
    "CancelRequest",
    # frontend
    "Query",
    "Parse",
    "Bind",
    "Execute",
    "Describe",
    "Close",
    "Sync",
    "Flush",
    "Terminate",
    "PasswordMessage",
    "SASLInitialResponse",
    "SASLResponse",
    "FunctionCall",
    "CopyData",
    "CopyDone",
    "CopyFail",
    # backend
    "Authentication",
    "ParameterStatus",
    "BackendKeyData",
    "ReadyForQuery",
    "Field",
    "RowDescription",
    "DataRow",
    "CommandComplete",
    "ErrorResponse",
    "NoticeResponse",
    "NotificationResponse",
    "ParameterDescription",
    "CopyInResponse",
    "CopyOutResponse",
    "CopyBothResponse",
    "EmptyQueryResponse",
    "NoData",
    "ParseComplete",
    "BindComplete",
    "CloseComplete",
    "PortalSuspended",
    "NegotiateProtocolVersion",
    "FunctionCallResponse",
    "FrontendMessage",
    "BackendMessage",
]

# -- untyped startup packets --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupMessage:
    protocol: int
    params: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> str | None:
        return self.params.get("user")

    @property
    def database(self) -> str | None:
        """The database, defaulting to the user name as PostgreSQL does."""
        return self.params.get("database") or self.params.get("user")


@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: int


# -- frontend -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    sql: str


@dataclass(frozen=True, slots=True)
class Parse:
    name: str
    query: str
    param_type_oids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def param_format(self, index: int) -> int:
        """The format code (0 text, 1 binary) that applies to parameter ``index``."""
        if not self.param_formats:
            return 0
        if len(self.param_formats) == 1:
            return self.param_formats[0]
        return self.param_formats[index]


@dataclass(frozen=True, slots=True)
class Execute:
    portal: str = ""
    max_rows: int = 0


@dataclass(frozen=True, slots=True)
class Describe:
    kind: str  # 'S' statement | 'P' portal
    name: str = ""


@dataclass(frozen=True, slots=True)
class Close:
    kind: str  # 'S' statement | 'P' portal
    name: str = ""


@dataclass(frozen=True, slots=True)
class Sync:
    pass


@dataclass(frozen=True, slots=True)
class Flush:
    pass


@dataclass(frozen=True, slots=True)
class Terminate:
    pass


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """A 'p' message whose meaning depends on the auth exchange; ``data`` is the raw body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SASLInitialResponse:
    mechanism: str
    data: bytes | None  # None when the client sent length -1


@dataclass(frozen=True, slots=True)
class SASLResponse:
    data: bytes


@dataclass(frozen=True, slots=True)
class FunctionCall:
    oid: int
    arg_formats: tuple[int, ...] = ()
    args: tuple[bytes | None, ...] = ()
    result_format: int = 0


@dataclass(frozen=True, slots=True)
class CopyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class CopyDone:
    pass


@dataclass(frozen=True, slots=True)
class CopyFail:
    message: str


# -- backend --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authentication:
    code: int  # AUTH_* constant
    data: bytes = b""  # md5 salt, SASL mechanism list, SASL challenge, ...


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    pid: int
    secret: int


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    status: str  # 'I' idle | 'T' in transaction | 'E' failed transaction


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    table_oid: int = 0
    column_attnum: int = 0
    type_oid: int = 25  # text
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0


@dataclass(frozen=True, slots=True)
class RowDescription:
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class DataRow:
    values: tuple[bytes | None, ...]


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: str


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    fields: dict[str, str]  # field code char -> value (see constants.FIELD_*)

    @property
    def code(self) -> str | None:
        return self.fields.get("C")

    @property
    def message(self) -> str | None:
        return self.fields.get("M")


@dataclass(frozen=True, slots=True)
class NoticeResponse:
    fields: dict[str, str]

    @property
    def code(self) -> str | None:
        return self.fields.get("C")

    @property
    def message(self) -> str | None:
        return self.fields.get("M")


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    pid: int
    channel: str
    payload: str = ""


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    type_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyInResponse:
    format: int  # 0 text, 1 binary (overall)
    column_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyOutResponse:
    format: int
    column_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyBothResponse:
    format: int
    column_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse:
    pass


@dataclass(frozen=True, slots=True)
class NoData:
    pass


@dataclass(frozen=True, slots=True)
class ParseComplete:
    pass


@dataclass(frozen=True, slots=True)
class BindComplete:
    pass


@dataclass(frozen=True, slots=True)
class CloseComplete:
    pass


@dataclass(frozen=True, slots=True)
class PortalSuspended:
    pass


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    newest_minor: int
    unrecognized_options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    value: bytes | None


FrontendMessage = (
    StartupMessage
    | SSLRequest
    | GSSENCRequest
    | CancelRequest
    | Query
    | Parse
    | Bind
    | Execute
    | Describe
    | Close
    | Sync
    | Flush
    | Terminate
    | PasswordMessage
    | SASLInitialResponse
    | SASLResponse
    | FunctionCall
    | CopyData
    | CopyDone
    | CopyFail
)

BackendMessage = (
    Authentication
    | ParameterStatus
    | BackendKeyData
    | ReadyForQuery
    | RowDescription
    | DataRow
    | CommandComplete
    | ErrorResponse
    | NoticeResponse
    | NotificationResponse
    | ParameterDescription
    | CopyInResponse
    | CopyOutResponse
    | CopyBothResponse
    | EmptyQueryResponse
    | NoData
    | ParseComplete
    | BindComplete
    | CloseComplete
    | PortalSuspended
    | NegotiateProtocolVersion
    | FunctionCallResponse
    | CopyData
    | CopyDone
)
