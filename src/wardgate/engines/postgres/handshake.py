"""Connection set-up on both sides of the PostgreSQL gateway.

Theory of operation
-------------------
Set-up is sequential and rare, so it is written with asyncio streams; once both sides
are ready the engine hands the two transports to the Protocol-based relay
(`relay.py`), which is the hot path.

Agent side: SSLRequest is answered `S` (and TLS started) when the listener has a
certificate, else `N`; GSSENCRequest is answered `N`; a CancelRequest is routed to the
target backend it names. The agent authenticates with SCRAM-SHA-256 against the
verifier derived from its token; an unknown identity runs the same exchange against a
fake verifier so the reply does not reveal which names exist. An OIDC-backed identity
sends its ID token as a cleartext password instead (the gateway cannot know a SCRAM
verifier for a token it has never seen), which the engine asks for only over TLS.

Target side: connect, negotiate TLS per `target.tls`, authenticate with the connection's
own credential (SCRAM-SHA-256, md5, cleartext or trust), and collect ParameterStatus and
BackendKeyData until ReadyForQuery. Nothing from this exchange that could carry the
target credential is sent to the agent.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from wardgate.config import ConnectionConfig, TargetConfig
from wardgate.wire.pg import backend as be
from wardgate.wire.pg import frontend as fe
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.auth import AuthenticationFailed, ScramClient, ScramServer, md5_password
from wardgate.wire.pg.constants import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
)
from wardgate.wire.pg.framing import MessageReader, ProtocolError

__all__ = [
    "AgentStartup",
    "HandshakeError",
    "TargetSession",
    "read_message",
    "connect_target",
    "authenticate_agent",
    "read_cleartext_password",
    "read_search_path",
    "FORWARDED_STARTUP_PARAMS",
]

# Startup parameters an agent may pass through to the target. `options` is NOT here:
# `options=-c role=admin` or `-c session_authorization=...` would change the session's
# privileges without a statement the policy ever sees.
FORWARDED_STARTUP_PARAMS = frozenset(
    {
        "application_name",
        "client_encoding",
        "DateStyle",
        "datestyle",
        "TimeZone",
        "timezone",
        "IntervalStyle",
        "intervalstyle",
        "extra_float_digits",
        "search_path",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
    }
)


class HandshakeError(Exception):
    """Set-up failed; `packet` is the FATAL ErrorResponse to send the agent (if any)."""

    def __init__(self, message: str, *, sqlstate: str = "08006", packet: bytes | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.packet = packet if packet is not None else w.error_response("FATAL", sqlstate, message)


async def read_message(reader: asyncio.StreamReader, mr: MessageReader) -> tuple[int, bytes, bytes]:
    while True:
        msg = mr.next_message()
        if msg is not None:
            return msg
        data = await reader.read(65536)
        if not data:
            raise HandshakeError("connection closed during set-up", packet=b"")
        mr.feed(data)


# --------------------------------------------------------------------------- agent side


@dataclass
class AgentStartup:
    user: str
    database: str | None
    params: dict[str, str]
    tls: bool
    cancel: tuple[int, int] | None = None  # (pid, secret) when the packet was a CancelRequest


async def read_agent_startup(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    mr: MessageReader,
    ssl_context: ssl.SSLContext | None,
    *,
    tls_required: bool = False,
) -> AgentStartup:
    tls = False
    for _ in range(4):  # SSLRequest, GSSENCRequest, then the real one
        _type, body, _raw = await read_message(reader, mr)
        msg = fe.decode_startup(body)
        name = type(msg).__name__
        if name == "SSLRequest":
            if ssl_context is not None and not tls:
                if mr.buffered:
                    raise HandshakeError("data sent before the TLS handshake", sqlstate="08P01")
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(ssl_context)
                tls = True
            else:
                writer.write(b"N")
                await writer.drain()
            mr.expect_startup()
            continue
        if name == "GSSENCRequest":
            writer.write(b"N")
            await writer.drain()
            mr.expect_startup()
            continue
        if name == "CancelRequest":
            return AgentStartup("", None, {}, tls, cancel=(msg.pid, msg.secret))
        # StartupMessage
        if tls_required and not tls:
            raise HandshakeError(
                "wardgate: this listener requires TLS (sslmode=require)", sqlstate="28000"
            )
        params = dict(msg.params)
        for key, value in params.items():
            # the codec keeps bytes that are not UTF-8 as surrogates: such a name cannot
            # be recorded, matched against an identity or handed to the target as is
            if not (key + value).isascii() and not fe.is_utf8(key + value):
                raise HandshakeError(
                    'wardgate: invalid byte sequence for encoding "UTF8" in startup '
                    "parameter " + repr(key.encode("utf-8", "surrogateescape"))[1:],
                    sqlstate="22021",
                )
        user = params.get("user")
        if not user:
            raise HandshakeError("no user name in the startup packet", sqlstate="28000")
        if params.get("replication") not in (None, "false", "0", "off", "no"):
            raise HandshakeError(
                "wardgate: replication connections are not supported", sqlstate="0A000"
            )
        return AgentStartup(user, params.get("database") or user, params, tls)
    raise HandshakeError("too many negotiation packets", sqlstate="08P01")


async def authenticate_agent(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    mr: MessageReader,
    server: ScramServer,
) -> None:
    """Run SCRAM-SHA-256 with the agent; raises AuthenticationFailed on a bad proof."""
    writer.write(w.authentication_sasl(["SCRAM-SHA-256"]))
    await writer.drain()
    t, body, _ = await read_message(reader, mr)
    if t != ord("p"):
        raise HandshakeError("expected a SASLInitialResponse", sqlstate="08P01")
    mechanism, data = fe.decode_sasl_initial(body)
    if mechanism != "SCRAM-SHA-256" or data is None:
        raise AuthenticationFailed(f"unsupported SASL mechanism {mechanism!r}")
    writer.write(w.authentication_sasl_continue(server.handle_client_first(data)))
    await writer.drain()
    t, body, _ = await read_message(reader, mr)
    if t != ord("p"):
        raise HandshakeError("expected a SASLResponse", sqlstate="08P01")
    final = server.handle_client_final(bytes(body))
    writer.write(w.authentication_sasl_final(final))


async def read_cleartext_password(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mr: MessageReader
) -> str:
    """Ask for the password in cleartext (AuthenticationCleartextPassword) and return it.

    The caller makes sure the connection is encrypted (or an allowed loopback test)."""
    writer.write(w.authentication_cleartext())
    await writer.drain()
    t, body, _ = await read_message(reader, mr)
    if t != ord("p"):
        raise HandshakeError("expected a PasswordMessage", sqlstate="08P01")
    try:
        return fe.decode_cleartext_password(body)
    except (ProtocolError, UnicodeDecodeError, ValueError):
        raise HandshakeError("malformed PasswordMessage", sqlstate="08P01") from None


# --------------------------------------------------------------------------- target side


@dataclass
class TargetSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    mr: MessageReader
    parameters: list[tuple[str, str]] = field(default_factory=list)
    pid: int = 0
    secret: int = 0
    tls: bool = False


# one SSL context per target configuration: building one loads the system CA bundle,
# which costs milliseconds that a new agent connection should not pay
_SSL_CONTEXTS: dict[tuple, ssl.SSLContext] = {}


def _target_ssl_context(target: TargetConfig) -> ssl.SSLContext:
    key = (target.host, target.tls, str(target.ca) if target.ca else None)
    ctx = _SSL_CONTEXTS.get(key)
    if ctx is not None:
        return ctx
    if target.tls == "verify-full":
        ctx = ssl.create_default_context(cafile=str(target.ca))
        ctx.check_hostname = True
    else:
        ctx = ssl.create_default_context(cafile=str(target.ca) if target.ca else None)
        if target.ca is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    _SSL_CONTEXTS[key] = ctx
    return ctx


async def connect_target(conn: ConnectionConfig, agent_params: dict[str, str]) -> TargetSession:
    target = conn.target
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port), target.connect_timeout
        )
    except (OSError, TimeoutError) as exc:
        raise HandshakeError(
            f"wardgate: cannot reach the target of connection {conn.name!r}: "
            f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
        ) from None
    tls = False
    try:
        if target.tls != "disable":
            writer.write(w.ssl_request())
            await writer.drain()
            answer = await reader.readexactly(1)
            if answer == b"S":
                await writer.start_tls(_target_ssl_context(target), server_hostname=target.host)
                tls = True
            elif target.tls in ("require", "verify-full"):
                raise HandshakeError(
                    f"wardgate: the target of connection {conn.name!r} does not offer TLS "
                    f"(tls: {target.tls})"
                )
        params = {"user": target.user, "database": target.database}
        for key, value in agent_params.items():
            if key in FORWARDED_STARTUP_PARAMS:
                params[key] = value
        # the gateway reads statements as UTF-8; the target must read the same bytes the
        # same way (SJIS, BIG5 or GBK could hide a quote inside a multi-byte character)
        params["client_encoding"] = "UTF8"
        # and backslashes in '...' literals are plain characters for both (pglast's view)
        params["standard_conforming_strings"] = "on"
        writer.write(w.startup_message(params))
        await writer.drain()
        mr = MessageReader()
        session = TargetSession(reader, writer, mr, tls=tls)
        await asyncio.wait_for(_authenticate_to_target(session, target), target.connect_timeout)
        return session
    except HandshakeError:
        writer.close()
        raise
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError, ssl.SSLError) as exc:
        writer.close()
        raise HandshakeError(
            f"wardgate: set-up with the target of connection {conn.name!r} failed: "
            f"{type(exc).__name__}"
        ) from None


# SCRAM SaltedPassword per (password digest, salt, iterations): PBKDF2 with 4096
# iterations costs ~2.5 ms, paid once per target role instead of once per connection
_SALTED: dict = {}


async def _authenticate_to_target(session: TargetSession, target: TargetConfig) -> None:
    reader, writer, mr = session.reader, session.writer, session.mr
    scram: ScramClient | None = None

    def password() -> str:
        if target.password is None:
            raise HandshakeError("wardgate: the target asks for a password and none is configured")
        return target.password.resolve()

    while True:
        t, body, _raw = await read_message(reader, mr)
        if t == ord("R"):
            auth = be.decode_authentication(body)
            if auth.code == AUTH_OK:
                continue
            if auth.code == AUTH_CLEARTEXT:
                writer.write(w.password_message(password()))
            elif auth.code == AUTH_MD5:
                writer.write(
                    w.password_message(md5_password(target.user, password(), auth.data).decode())
                )
            elif auth.code == AUTH_SASL:
                mechanisms = be.decode_sasl_mechanisms(auth.data)
                if "SCRAM-SHA-256" not in mechanisms:
                    raise HandshakeError(
                        f"wardgate: target offers no supported SASL mechanism {mechanisms}"
                    )
                scram = ScramClient(target.user, password(), salted_cache=_SALTED)
                writer.write(w.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
            elif auth.code == AUTH_SASL_CONTINUE and scram is not None:
                writer.write(w.sasl_response(scram.handle_server_first(auth.data)))
            elif auth.code == AUTH_SASL_FINAL and scram is not None:
                scram.verify_server_final(auth.data)
            else:
                raise HandshakeError(
                    f"wardgate: unsupported target authentication method {auth.code}"
                )
            await writer.drain()
        elif t == ord("S"):
            ps = be.decode_parameter_status(body)
            session.parameters.append((ps.name, ps.value))
        elif t == ord("K"):
            key = be.decode_backend_key_data(body)
            session.pid, session.secret = key.pid, key.secret
        elif t == ord("Z"):
            return
        elif t == ord("E"):
            fields = be.decode_fields(body)
            # the target's own words, without anything of ours; never the password
            raise HandshakeError(
                f"wardgate: the target refused connection set-up: {fields.get('M', 'error')}",
                sqlstate=fields.get("C", "08006"),
            )
        elif t == ord("N"):
            continue
        else:
            raise HandshakeError(
                f"wardgate: unexpected message {chr(t)!r} from the target during set-up"
            )


# the schemas the target searches for unqualified names when only `public` is: the
# policy reads an unqualified table as public.<name> then (policy/match.py)
DEFAULT_SCHEMAS = "{public}"


async def read_search_path(session: TargetSession) -> str | None:
    """The schemas unqualified names resolve to in a fresh target session (`{public}`),
    or None if the target did not say. Asked once per session at set-up: a search_path
    can come from the startup packet, `ALTER ROLE/DATABASE ... SET search_path` made by
    an earlier session, or the target's own configuration."""
    session.writer.write(w.query("SELECT pg_catalog.current_schemas(false)"))
    await session.writer.drain()
    value: str | None = None
    failed = False
    while True:
        t, body, _raw = await read_message(session.reader, session.mr)
        if t == ord("D"):
            row = be.decode_data_row(body)
            value = None if not row or row[0] is None else bytes(row[0]).decode()
        elif t == ord("E"):
            failed = True
        elif t == ord("Z"):
            return None if failed else value


async def send_cancel(host: str, port: int, pid: int, secret: int) -> None:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError):
        return
    try:
        writer.write(w.cancel_request(pid, secret))
        await writer.drain()
    finally:
        writer.close()
