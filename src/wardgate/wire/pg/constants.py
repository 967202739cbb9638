"""PostgreSQL protocol 3.0 constants: message type bytes, magic codes, SQLSTATEs.

Theory of operation: every typed message starts with one type byte. Frontend (client to
server) and backend (server to client) reuse letters ('D' is Describe from a client and
DataRow from a server), so the names here say which direction they belong to where the
letter is shared. Values are plain ints (``ord(letter)``) because that is what
``MessageReader.next_message`` hands out and int comparison is the cheapest check on the
hot path.
"""

from __future__ import annotations

__all__ = [
    # protocol codes found in untyped startup packets
    "PROTOCOL_3_0",
    "SSL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "CANCEL_REQUEST_CODE",
    "UNTYPED",
    # frontend
    "QUERY",
    "PARSE",
    "BIND",
    "EXECUTE",
    "DESCRIBE",
    "CLOSE",
    "SYNC",
    "FLUSH",
    "TERMINATE",
    "PASSWORD_MESSAGE",
    "SASL_INITIAL_RESPONSE",
    "SASL_RESPONSE",
    "GSS_RESPONSE",
    "FUNCTION_CALL",
    "COPY_DATA",
    "COPY_DONE",
    "COPY_FAIL",
    # backend
    "AUTHENTICATION",
    "PARAMETER_STATUS",
    "BACKEND_KEY_DATA",
    "READY_FOR_QUERY",
    "ROW_DESCRIPTION",
    "DATA_ROW",
    "COMMAND_COMPLETE",
    "ERROR_RESPONSE",
    "NOTICE_RESPONSE",
    "NOTIFICATION_RESPONSE",
    "PARAMETER_DESCRIPTION",
    "COPY_IN_RESPONSE",
    "COPY_OUT_RESPONSE",
    "COPY_BOTH_RESPONSE",
    "EMPTY_QUERY_RESPONSE",
    "NO_DATA",
    "PARSE_COMPLETE",
    "BIND_COMPLETE",
    "CLOSE_COMPLETE",
    "PORTAL_SUSPENDED",
    "NEGOTIATE_PROTOCOL_VERSION",
    "FUNCTION_CALL_RESPONSE",
    # authentication request codes
    "AUTH_OK",
    "AUTH_KERBEROS_V5",
    "AUTH_CLEARTEXT",
    "AUTH_MD5",
    "AUTH_SCM_CREDENTIAL",
    "AUTH_GSS",
    "AUTH_GSS_CONTINUE",
    "AUTH_SSPI",
    "AUTH_SASL",
    "AUTH_SASL_CONTINUE",
    "AUTH_SASL_FINAL",
    # transaction status (ReadyForQuery)
    "TX_IDLE",
    "TX_IN_TRANSACTION",
    "TX_FAILED",
    # error / notice field codes
    "FIELD_SEVERITY",
    "FIELD_SEVERITY_NONLOCALIZED",
    "FIELD_CODE",
    "FIELD_MESSAGE",
    "FIELD_DETAIL",
    "FIELD_HINT",
    "FIELD_POSITION",
    "FIELD_INTERNAL_POSITION",
    "FIELD_INTERNAL_QUERY",
    "FIELD_WHERE",
    "FIELD_SCHEMA",
    "FIELD_TABLE",
    "FIELD_COLUMN",
    "FIELD_DATA_TYPE",
    "FIELD_CONSTRAINT",
    "FIELD_FILE",
    "FIELD_LINE",
    "FIELD_ROUTINE",
    # SQLSTATEs
    "SQLSTATE_INVALID_PASSWORD",
    "SQLSTATE_INVALID_AUTHORIZATION",
    "SQLSTATE_INSUFFICIENT_PRIVILEGE",
    "SQLSTATE_SYSTEM_ERROR",
    "SQLSTATE_PROTOCOL_VIOLATION",
    "SQLSTATE_QUERY_CANCELED",
    "SQLSTATE_FEATURE_NOT_SUPPORTED",
    "SQLSTATE_CONNECTION_FAILURE",
    "SQLSTATE_CANNOT_CONNECT_NOW",
    "SQLSTATE_ADMIN_SHUTDOWN",
    "SQLSTATE_TOO_MANY_CONNECTIONS",
    "SQLSTATE_INVALID_CATALOG_NAME",
    "SQLSTATE_SYNTAX_ERROR",
]

# -- untyped startup packets (Int32 length, Int32 code, ...) ---------------------------
PROTOCOL_3_0 = 196608  # (3 << 16) | 0
SSL_REQUEST_CODE = 80877103  # (1234 << 16) | 5679
GSSENC_REQUEST_CODE = 80877104  # (1234 << 16) | 5680
CANCEL_REQUEST_CODE = 80877102  # (1234 << 16) | 5678
UNTYPED = 0  # the "type byte" MessageReader reports for untyped startup packets

# -- frontend (client -> server) -------------------------------------------------------
QUERY = ord("Q")
PARSE = ord("P")
BIND = ord("B")
EXECUTE = ord("E")
DESCRIBE = ord("D")
CLOSE = ord("C")
SYNC = ord("S")
FLUSH = ord("H")
TERMINATE = ord("X")
PASSWORD_MESSAGE = ord("p")
SASL_INITIAL_RESPONSE = ord("p")  # same letter; meaning depends on the auth exchange
SASL_RESPONSE = ord("p")
GSS_RESPONSE = ord("p")
FUNCTION_CALL = ord("F")
COPY_DATA = ord("d")  # both directions
COPY_DONE = ord("c")  # both directions
COPY_FAIL = ord("f")

# -- backend (server -> client) --------------------------------------------------------
AUTHENTICATION = ord("R")
PARAMETER_STATUS = ord("S")
BACKEND_KEY_DATA = ord("K")
READY_FOR_QUERY = ord("Z")
ROW_DESCRIPTION = ord("T")
DATA_ROW = ord("D")
COMMAND_COMPLETE = ord("C")
ERROR_RESPONSE = ord("E")
NOTICE_RESPONSE = ord("N")
NOTIFICATION_RESPONSE = ord("A")
PARAMETER_DESCRIPTION = ord("t")
COPY_IN_RESPONSE = ord("G")
COPY_OUT_RESPONSE = ord("H")
COPY_BOTH_RESPONSE = ord("W")
EMPTY_QUERY_RESPONSE = ord("I")
NO_DATA = ord("n")
PARSE_COMPLETE = ord("1")
BIND_COMPLETE = ord("2")
CLOSE_COMPLETE = ord("3")
PORTAL_SUSPENDED = ord("s")
NEGOTIATE_PROTOCOL_VERSION = ord("v")
FUNCTION_CALL_RESPONSE = ord("V")

# -- Authentication request codes (first Int32 of an 'R' message) ----------------------
AUTH_OK = 0
AUTH_KERBEROS_V5 = 2
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SCM_CREDENTIAL = 6
AUTH_GSS = 7
AUTH_GSS_CONTINUE = 8
AUTH_SSPI = 9
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# -- ReadyForQuery transaction status ---------------------------------------------------
TX_IDLE = "I"
TX_IN_TRANSACTION = "T"
TX_FAILED = "E"

# -- ErrorResponse / NoticeResponse field codes ----------------------------------------
FIELD_SEVERITY = "S"
FIELD_SEVERITY_NONLOCALIZED = "V"
FIELD_CODE = "C"
FIELD_MESSAGE = "M"
FIELD_DETAIL = "D"
FIELD_HINT = "H"
FIELD_POSITION = "P"
FIELD_INTERNAL_POSITION = "p"
FIELD_INTERNAL_QUERY = "q"
FIELD_WHERE = "W"
FIELD_SCHEMA = "s"
FIELD_TABLE = "t"
FIELD_COLUMN = "c"
FIELD_DATA_TYPE = "d"
FIELD_CONSTRAINT = "n"
FIELD_FILE = "F"
FIELD_LINE = "L"
FIELD_ROUTINE = "R"

# -- SQLSTATE codes the gateway emits ---------------------------------------------------
SQLSTATE_INVALID_PASSWORD = "28P01"
SQLSTATE_INVALID_AUTHORIZATION = "28000"
SQLSTATE_INSUFFICIENT_PRIVILEGE = "42501"
SQLSTATE_SYSTEM_ERROR = "58000"
SQLSTATE_PROTOCOL_VIOLATION = "08P01"
SQLSTATE_QUERY_CANCELED = "57014"
SQLSTATE_FEATURE_NOT_SUPPORTED = "0A000"
SQLSTATE_CONNECTION_FAILURE = "08006"
SQLSTATE_CANNOT_CONNECT_NOW = "57P03"
SQLSTATE_ADMIN_SHUTDOWN = "57P01"
SQLSTATE_TOO_MANY_CONNECTIONS = "53300"
SQLSTATE_INVALID_CATALOG_NAME = "3D000"
SQLSTATE_SYNTAX_ERROR = "42601"
