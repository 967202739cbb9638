"""The PostgreSQL engine: one listener per `postgres` connection of the config.

It accepts agents, runs the set-up in `handshake.py` (TLS, SCRAM or an OIDC token,
target login), records the session start (or the refused attempt), then hands both
transports to a `PgRelay`. It keeps the table of backend keys it handed out so a CancelRequest reaches
the right target backend, and closes every session on shutdown.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import ssl
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from wardgate.config import ConnectionConfig
from wardgate.engines.postgres import handshake as hs
from wardgate.engines.postgres.relay import PgRelay
from wardgate.identity.oidc import OidcClaims, OidcError
from wardgate.identity.registry import Identity
from wardgate.identity.throttle import AuthFailureLimiter, Block, client_ip
from wardgate.metrics import METRICS
from wardgate.pipeline.command import SessionInfo
from wardgate.pipeline.gateway import Gateway
from wardgate.policy.facts import is_utf8_name
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.auth import AuthenticationFailed, ScramServer
from wardgate.wire.pg.framing import MessageReader, ProtocolError

__all__ = ["PostgresEngine", "log_line"]

log = logging.getLogger("wardgate.postgres")

SETUP_TIMEOUT = 30.0
# Before and during authentication anyone may send: no set-up message (SASL, password,
# an OIDC ID token) may be longer than PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH, and the
# stream buffers at most twice _SETUP_READ_LIMIT, so an unauthenticated connection
# costs kilobytes, not the 64 MiB a statement may have.
SETUP_MAX_MESSAGE = 65535
_SETUP_READ_LIMIT = 65536
LIMIT_RULE = "gateway/auth-failure-limit"
LIMIT_REASON = "too many failed logins"
# refusals that are not failed logins: they do not count towards auth_failure_limit
# (an authenticated, admitted identity at its session limit is not guessing tokens)
_NOT_COUNTED = frozenset({"session limit"})


def log_line(event: str, **fields: Any) -> None:
    """One structured line to stderr (never a secret: callers pass names, not values)."""
    fields = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}
    sys.stderr.write(json.dumps(fields, default=str) + "\n")
    sys.stderr.flush()


class PostgresEngine:
    protocol = "postgres"

    def __init__(self, gateway: Gateway, conn: ConnectionConfig) -> None:
        self.gw = gateway
        self.conn = conn
        self.server: asyncio.AbstractServer | None = None
        self.relays: set[PgRelay] = set()
        # identity -> sessions open or past authentication (max_sessions_per_identity)
        self.sessions_of: dict[str, int] = {}
        self._setups: set[asyncio.Task] = set()
        self.reuse_port = False
        # (connection, pid, secret, client) -> None: hands a CancelRequest whose key this
        # process did not issue to the other workers (workers.py); None outside workers
        self.forward_cancel: Callable[[str, int, int, str], None] | None = None
        # our BackendKeyData -> (target host, port, target pid, target secret)
        self.keys: dict[tuple[int, int], tuple[str, int, int, int]] = {}
        self.ssl_context: ssl.SSLContext | None = None
        if conn.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(conn.tls.cert), str(conn.tls.key))
            self.ssl_context = ctx
        lim = conn.auth_failure_limit
        self.limiter: AuthFailureLimiter | None = None
        if lim is not None:
            self.limiter = AuthFailureLimiter(
                lim.failures, lim.window, lim.block, max_addresses=lim.max_addresses
            )
        self._sweeper: asyncio.Task | None = None

    def cancel_from_sibling(self, pid: int, secret: int, client_addr: str) -> None:
        """A CancelRequest another worker received for a key this process issued."""
        if (pid, secret) in self.keys:
            task = asyncio.get_running_loop().create_task(self._cancel(pid, secret, client_addr))
            self._setups.add(task)
            task.add_done_callback(self._setups.discard)

    async def start(self) -> None:
        host, port = self.conn.listen
        # reuse_port: several worker processes listen on one port (`serve --workers N`)
        self.server = await asyncio.start_server(
            self._accept,
            host,
            port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            limit=_SETUP_READ_LIMIT,
        )
        if self.limiter is not None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_blocks())

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._setups):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.limiter is not None:
            # blocks still holding: their summary now, so the attack's size is not lost
            ended = self.limiter.take_ended(time.time(), all_=True)
            await asyncio.gather(*(self._record_block_end(b) for b in ended))
        fatal = w.error_response("FATAL", "57P01", "wardgate: the gateway is shutting down")
        for relay in list(self.relays):
            relay.close("gateway shutdown", fatal=fatal)
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ one agent

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._setups.add(task)
        try:
            await asyncio.wait_for(self._setup(reader, writer), SETUP_TIMEOUT)
        except TimeoutError:
            self._refuse(
                writer, w.error_response("FATAL", "08006", "wardgate: connection set-up timed out")
            )
        except hs.HandshakeError as exc:
            self._refuse(writer, exc.packet)
        except ProtocolError as exc:
            self._refuse(
                writer, w.error_response("FATAL", "08P01", f"wardgate: protocol violation: {exc}")
            )
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            writer.close()
        except asyncio.CancelledError:
            writer.close()
        except Exception:
            log.exception("session set-up failed")
            self._refuse(
                writer, w.error_response("FATAL", "XX000", "wardgate: internal error during set-up")
            )
        finally:
            if task is not None:
                self._setups.discard(task)

    def _refuse(self, writer: asyncio.StreamWriter, packet: bytes) -> None:
        try:
            if packet and not writer.is_closing():
                writer.write(packet)
        finally:
            writer.close()

    async def _setup(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        client_addr = f"{peer[0]}:{peer[1]}"
        mr = MessageReader(startup=True, max_message_size=SETUP_MAX_MESSAGE)
        tls_required = bool(self.conn.tls and self.conn.tls.required)
        startup = await hs.read_agent_startup(
            reader, writer, mr, self.ssl_context, tls_required=tls_required
        )
        if startup.cancel is not None:
            await self._cancel(*startup.cancel, client_addr)
            writer.close()
            return
        if self.limiter is not None:
            # before any SCRAM work, token check or target login; one summary per block
            # is recorded, not one event per refused attempt
            now = time.time()
            block = self.limiter.refused(client_ip(str(peer[0])), now)
            if block is not None:
                METRICS.sessions_refused[(LIMIT_REASON,)] += 1
                METRICS.auth_blocked[(self.conn.name,)] += 1
                wait = max(1, int(block.until - now + 0.999))
                until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(block.until))
                raise hs.HandshakeError(
                    f"wardgate: too many failed logins from {block.address}; connections "
                    f"from it are refused until {until} (retry in {wait}s, auth_failure_limit)",
                    sqlstate="28000",
                )

        requested = startup.params.get("client_encoding")
        if requested is not None and not is_utf8_name(requested):
            raise hs.HandshakeError(
                f"wardgate: client_encoding {requested!r} is not supported; use UTF8",
                sqlstate="0A000",
            )
        claimed = startup.user
        identity = self.gw.identities.get(claimed)
        oidc: OidcClaims | None = None
        if identity is not None and identity.oidc is not None:
            oidc = await self._authenticate_oidc(reader, writer, mr, startup, identity, client_addr)
            identity = replace(
                identity,
                groups=identity.groups
                + tuple(g for g in oidc.extra_groups if g not in identity.groups),
            )
        else:
            server = ScramServer(self.gw.identities.verifier(claimed))
            try:
                await hs.authenticate_agent(reader, writer, mr, server)
                if identity is None:
                    raise AuthenticationFailed("unknown identity")
            except AuthenticationFailed:
                reason = "unknown identity" if identity is None else "bad token"
                await self._auth_failure(claimed, client_addr, reason, "28P01")
                raise hs.HandshakeError(
                    f'password authentication failed for user "{claimed}"', sqlstate="28P01"
                ) from None
        if identity.disabled:
            await self._auth_failure(claimed, client_addr, "identity disabled", "28000")
            raise hs.HandshakeError(f'wardgate: identity "{claimed}" is disabled', sqlstate="28000")
        if not self._admitted(identity):
            await self._auth_failure(
                claimed, client_addr, "not allowed on this connection", "28000"
            )
            raise hs.HandshakeError(
                f'wardgate: identity "{claimed}" may not use connection "{self.conn.name}"',
                sqlstate="28000",
            )
        if startup.database not in (self.conn.name, self.conn.target.database, claimed):
            raise hs.HandshakeError(
                f'wardgate: connection "{self.conn.name}" serves database "{self.conn.target.database}", '
                f'not "{startup.database}"',
                sqlstate="3D000",
            )

        limit = self.conn.max_sessions_per_identity
        if limit is not None and self.sessions_of.get(identity.name, 0) >= limit:
            await self._auth_failure(claimed, client_addr, "session limit", "53300")
            raise hs.HandshakeError(
                f'wardgate: identity "{claimed}" already has {limit} sessions on connection '
                f'"{self.conn.name}" (max_sessions_per_identity)',
                sqlstate="53300",
            )
        self.sessions_of[identity.name] = self.sessions_of.get(identity.name, 0) + 1
        try:
            await self._open_session(reader, writer, mr, startup, identity, oidc, client_addr)
        except BaseException:
            self._session_gone(identity.name)
            raise

    def _session_gone(self, name: str) -> None:
        left = self.sessions_of.get(name, 0) - 1
        if left > 0:
            self.sessions_of[name] = left
        else:
            self.sessions_of.pop(name, None)

    async def _open_session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        mr: MessageReader,
        startup: hs.AgentStartup,
        identity: Identity,
        oidc: OidcClaims | None,
        client_addr: str,
    ) -> None:
        """Past authentication: log in to the target, record the start, hand over to the
        relay (its close frees the identity's place)."""
        target = await hs.connect_target(self.conn, startup.params)
        try:
            schemas = await asyncio.wait_for(
                hs.read_search_path(target), self.conn.target.connect_timeout
            )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError, ValueError):
            target.writer.close()
            raise hs.HandshakeError(
                f"wardgate: set-up with the target of connection {self.conn.name!r} failed "
                "(search_path)"
            ) from None
        # column rules follow source columns: the catalog map, read at most every 30 s
        await self.gw.catalogs.refresh_if_old(self.conn)
        info = SessionInfo(
            session_id=new_session_id(),
            identity=identity.name,
            groups=identity.groups,
            connection=self.conn.name,
            protocol="postgres",
            client_addr=client_addr,
            # the agent's own text, kept in every event of the session and in logs:
            # masked like a statement's text (the raw one still reaches the target)
            application_name=self.gw.mask_text(startup.params.get("application_name") or "")
            or None,
        )
        fut = self.gw.record(
            "session_start",
            info,
            meta={
                "client_addr": client_addr,
                "application_name": info.application_name,
                "protocol": "postgres",
                "tls": startup.tls,
                "target_tls": target.tls,
                "database": self.conn.target.database,
                # how the agent proved who it is; for OIDC, what ties the session to the
                # CI job (issuer, subject, token id and expiry), never the token itself
                "auth": "token" if oidc is None else "oidc",
                **({} if oidc is None else {"oidc": oidc.evidence()}),
            },
        )
        try:
            await asyncio.wrap_future(fut)
        except Exception:
            target.writer.close()
            METRICS.audit_failures[()] += 1
            raise hs.HandshakeError("wardgate: audit store unavailable", sqlstate="58000") from None
        METRICS.sessions[(info.connection,)] += 1
        METRICS.active[(info.connection,)] += 1

        key = (secrets.randbits(31), secrets.randbits(31))
        self.keys[key] = (self.conn.target.host, self.conn.target.port, target.pid, target.secret)
        hello = [w.authentication_ok()]
        hello += [w.parameter_status(k, v) for k, v in target.parameters]
        hello.append(w.backend_key_data(*key))
        hello.append(w.ready_for_query("I"))
        writer.write(b"".join(hello))
        log_line(
            "session_start",
            session=info.session_id,
            identity=info.identity,
            connection=info.connection,
            client=client_addr,
            application_name=info.application_name,
            tls=startup.tls,
            auth="token" if oidc is None else "oidc",
            **({} if oidc is None else {"oidc_sub": oidc.sub, "oidc_jti": oidc.jti}),
        )

        def closed(relay: PgRelay) -> None:
            self.relays.discard(relay)
            self._session_gone(info.identity)
            METRICS.active[(info.connection,)] -= 1
            self.keys.pop(key, None)
            log_line(
                "session_end",
                session=info.session_id,
                identity=info.identity,
                connection=info.connection,
                statements=relay.statement_count,
                reason=relay.end_reason,
            )

        relay = PgRelay(
            self.gw,
            info,
            writer.transport,  # type: ignore[arg-type]
            target.writer.transport,  # type: ignore[arg-type]
            budget=self.conn.record_rows_budget,
            on_close=closed,
        )
        if schemas != hs.DEFAULT_SCHEMAS:
            # unqualified names may resolve outside public (a search_path from the startup
            # packet, a role's or database's stored one): the policy cannot say where
            relay.policy.search_path_changed = True
            relay.policy.search_path_context = f"schemas {schemas}"
        # StreamWriter.__del__ closes its transport: keep the set-up streams alive as
        # long as the relay uses their transports
        relay.keepalive = (reader, writer, target.reader, target.writer)
        self.relays.add(relay)
        agent_left = mr.take_remaining() + _drain_stream(reader)
        target_left = target.mr.take_remaining() + _drain_stream(target.reader)
        relay.start(agent_left, target_left)

    async def _authenticate_oidc(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        mr: MessageReader,
        startup: hs.AgentStartup,
        identity: Identity,
        client_addr: str,
    ) -> OidcClaims:
        """The agent's password is an ID token: asked for in cleartext, so only over TLS
        (or from this host when the listener allows it for tests)."""
        assert identity.oidc is not None
        claimed = identity.name
        if not startup.tls:
            peer = writer.get_extra_info("peername") or ("", 0)
            loopback = _is_loopback(peer[0])
            if not (self.conn.allow_oidc_without_tls_on_loopback and loopback):
                await self._auth_failure(claimed, client_addr, "oidc: no TLS", "28000")
                how = (
                    "connect with sslmode=require"
                    if self.conn.tls is not None
                    else f'configure tls: on connection "{self.conn.name}" and connect with '
                    "sslmode=require"
                )
                raise hs.HandshakeError(
                    f'wardgate: identity "{claimed}" authenticates with an OIDC token, which is '
                    f"sent only over TLS: {how}",
                    sqlstate="28000",
                )
        token = await hs.read_cleartext_password(reader, writer, mr)
        try:
            return await self.gw.identities.oidc.verify(claimed, identity.oidc, token)
        except OidcError as exc:
            await self._auth_failure(
                claimed, client_addr, exc.reason, exc.sqlstate, detail=str(exc)
            )
            raise hs.HandshakeError(
                f'OIDC authentication failed for user "{claimed}": {exc}', sqlstate=exc.sqlstate
            ) from None
        finally:
            del token

    def _admitted(self, identity: Any) -> bool:
        c = self.conn
        if c.allowed_identities is None and c.allowed_groups is None:
            return True
        if c.allowed_identities and identity.name in c.allowed_identities:
            return True
        return bool(c.allowed_groups and set(c.allowed_groups).intersection(identity.groups))

    async def _auth_failure(
        self,
        claimed: str,
        client_addr: str,
        reason: str,
        sqlstate: str,
        *,
        detail: str | None = None,
    ) -> None:
        # reason: a fixed label (a metrics label too); detail: the words the agent got
        METRICS.sessions_refused[(reason,)] += 1
        block = None
        if self.limiter is not None and reason not in _NOT_COUNTED:
            ip = client_ip(client_addr.rsplit(":", 1)[0])
            block = self.limiter.failure(ip, time.time())
        log_line(
            "auth_failure",
            identity=claimed,
            connection=self.conn.name,
            client=client_addr,
            reason=reason,
            **({} if detail is None else {"detail": detail}),
        )
        fut = self.gw.store.submit(
            "auth_failure",
            identity=claimed,
            connection=self.conn.name,
            verdict="deny",
            rule="gateway/authentication",
            meta={
                "client_addr": client_addr,
                "reason": reason,
                "protocol": "postgres",
                "sqlstate": sqlstate,
                **({} if detail is None else {"detail": detail}),
            },
        )
        try:
            await asyncio.wrap_future(fut)
        except Exception:
            log.error("could not record an authentication failure")
        if block is not None:
            await self._record_block(block, claimed)

    async def _record_block(self, b: Block, claimed: str) -> None:
        """The failure that reached the limit started a block: one event for it."""
        lim = self.conn.auth_failure_limit
        assert lim is not None
        log_line(
            "auth_blocked",
            connection=self.conn.name,
            client=b.address,
            failures=b.failures,
            until=_iso(b.until),
        )
        await self._submit_limit_event(
            claimed,
            {
                "client_addr": b.address,
                "reason": LIMIT_REASON,
                "protocol": "postgres",
                "sqlstate": "28000",
                "block": "started",
                "failures": b.failures,
                "window_seconds": lim.window,
                "block_seconds": lim.block,
                "started": _iso(b.started),
                "until": _iso(b.until),
            },
        )

    async def _record_block_end(self, b: Block) -> None:
        """One summary per block: how many attempts it refused, first and last."""
        log_line(
            "auth_unblocked",
            connection=self.conn.name,
            client=b.address,
            refused=b.refused,
            ended_early=b.ended_early,
        )
        await self._submit_limit_event(
            None,
            {
                "client_addr": b.address,
                "reason": LIMIT_REASON,
                "protocol": "postgres",
                "sqlstate": "28000",
                "block": "ended",
                "refused": b.refused,
                "first_refused": None if b.first_refused is None else _iso(b.first_refused),
                "last_refused": None if b.last_refused is None else _iso(b.last_refused),
                "started": _iso(b.started),
                "until": _iso(b.until),
                **({"ended_early": True} if b.ended_early else {}),
            },
        )

    async def _submit_limit_event(self, identity: str | None, meta: dict[str, Any]) -> None:
        try:
            fut = self.gw.store.submit(
                "auth_failure",
                identity=identity,
                connection=self.conn.name,
                verdict="deny",
                rule=LIMIT_RULE,
                meta=meta,
            )
            await asyncio.wrap_future(fut)
        except Exception:
            log.error("could not record a failed-login block")

    async def _sweep_blocks(self) -> None:
        """Record the end of each block soon after it ends, attempts or not."""
        assert self.limiter is not None
        while True:
            await asyncio.sleep(min(1.0, self.limiter.block / 4))
            ended = self.limiter.take_ended(time.time())
            # one group commit for many blocks ending at once, not one fsync each in turn
            try:
                await asyncio.gather(*(self._record_block_end(b) for b in ended))
            except Exception:  # never let the sweeper die
                log.exception("recording the end of a failed-login block failed")

    async def _cancel(self, pid: int, secret: int, client_addr: str) -> None:
        target = self.keys.get((pid, secret))
        if target is None:
            if self.forward_cancel is not None:  # a session of another worker process?
                self.forward_cancel(self.conn.name, pid, secret, client_addr)
            return  # as PostgreSQL: an unknown key is ignored silently
        host, port, tpid, tsecret = target
        self.gw.store.submit("cancel", connection=self.conn.name, meta={"client_addr": client_addr})
        await hs.send_cancel(host, port, tpid, tsecret)


def new_session_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so the store's session index grows at its end
    instead of taking random page writes, and ids sort by start time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (
        (ms & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | (rand >> 68 & 0xFFF) << 64
        | 0b10 << 62
        | (rand & ((1 << 62) - 1))
    )
    return str(uuid.UUID(int=value))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _drain_stream(reader: asyncio.StreamReader) -> bytes:
    # bytes the stream read past the end of set-up (a pipelined first query)
    buf = getattr(reader, "_buffer", None)
    if not buf:
        return b""
    data = bytes(buf)
    buf.clear()
    return data
