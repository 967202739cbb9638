"""The reviewers' HTTP API: list held statements, approve or deny them.

Theory of operation: a small Starlette app over an `ApprovalBroker`. Every route but
``/api/health`` needs ``Authorization: Bearer <token>``; the identity registry turns the
token into an identity (``authenticate_bearer``), and the broker's reviewer directory says
whether that identity may review. Decisions go through `ApprovalBroker.decide`, which
blocks until the audit event is durable, so it runs in Starlette's worker threads and the
event loop (which also carries the gateway's traffic) never waits on the disk.

``/metrics`` (unless turned off) serves Prometheus text without authentication.

Status codes: 401 no/bad token (with ``WWW-Authenticate: Bearer``), 403 not a reviewer or
own request, 404 unknown id, 409 no longer pending, 400 bad body, 503 audit store down
(the decision was not taken). Every error body is ``{"error": "..."}``.

`serve_api` runs the app under uvicorn inside the caller's event loop on a socket it binds
itself, so a taken port raises `OSError` here instead of uvicorn exiting the process, and
it leaves the process's signal handlers to the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from wardgate.approvals.broker import ApprovalBroker
from wardgate.approvals.durations import parse_duration
from wardgate.approvals.model import ApprovalError, iso_time
from wardgate.metrics import METRICS, Metrics, render_prometheus
from wardgate.termtext import json_line
from wardgate.worker_metrics import WorkerMetrics

try:
    from wardgate.audit.store import StoreUnavailable
except ImportError:  # pragma: no cover - until the audit store lands

    class StoreUnavailable(Exception):  # type: ignore[no-redef]
        pass


__all__ = ["create_app", "serve_api", "BearerAuthenticator"]


class _Identity(Protocol):
    name: str
    disabled: bool


class BearerAuthenticator(Protocol):
    def authenticate_bearer(self, token: str) -> _Identity | None: ...


class JSONResponse(_StarletteJSON):
    """Starlette's JSON, with every character a terminal would obey (and U+2028, NEL)
    written as a `\\uXXXX` escape: the same values to a client, but a reviewer reading
    `curl` output sees an agent's bidi override or C1 control instead of being fooled."""

    def render(self, content: Any) -> bytes:
        return json_line(content, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class _Denied(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def create_app(
    broker: ApprovalBroker,
    identities: BearerAuthenticator,
    *,
    metrics: Metrics | None = METRICS,
    worker_metrics: WorkerMetrics | None = None,
) -> Starlette:
    """The approvals API for `broker`, authenticating reviewers through `identities`.

    With `metrics` (the process's registry by default; None turns it off), `GET /metrics`
    serves its counters and gauges in Prometheus text format, without authentication,
    like any scrape target: its labels carry no identity, statement or value. With
    `worker_metrics` (`serve --workers N`), the page sums every worker's figures.
    """

    def reviewer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Denied(_error(401, "missing bearer token", **{"WWW-Authenticate": "Bearer"}))
        ident = identities.authenticate_bearer(token.strip())
        if ident is None or getattr(ident, "disabled", False):
            raise _Denied(
                _error(
                    401,
                    "invalid bearer token",
                    **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            )
        if not broker.reviewers.is_reviewer(ident.name):
            raise _Denied(_error(403, f"{ident.name!r} is not a reviewer"))
        return ident.name

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise _Denied(_error(400, "the body must be a JSON object")) from None
        if not isinstance(data, dict):
            raise _Denied(_error(400, "the body must be a JSON object"))
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _Denied(_error(400, "reason must be a string"))
        return data

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def list_pending(request: Request) -> JSONResponse:
        reviewer(request)
        pending = await run_in_threadpool(broker.pending)
        return JSONResponse({"approvals": [a.to_json() for a in pending]})

    async def show(request: Request) -> JSONResponse:
        reviewer(request)
        approval = await run_in_threadpool(broker.get, request.path_params["id"])
        if approval is None:
            return _error(404, f"no approval request {request.path_params['id']!r}")
        return JSONResponse({"approval": approval.to_json()})

    async def decide(request: Request, approve: bool) -> JSONResponse:
        name = reviewer(request)
        data = await body(request)
        approval_id = request.path_params["id"]
        reason = data.get("reason")
        grant_for = None
        if approve and data.get("for") is not None:
            try:
                grant_for = parse_duration(data["for"])
            except ValueError as exc:
                return _error(400, f"for: {exc}")
        if not approve and not (reason and reason.strip()):
            return _error(400, 'a denial needs a reason: {"reason": "..."}')
        try:
            approval = await run_in_threadpool(
                broker.decide,
                approval_id,
                name,
                approve=approve,
                reason=reason,
                grant_for_seconds=grant_for,
            )
        except ApprovalError as exc:
            return _error(exc.http_status, str(exc))
        except StoreUnavailable:
            return _error(503, "the audit store is unavailable; the decision was not recorded")
        out: dict[str, Any] = {"approval": approval.to_json()}
        grant = broker.active_grant(approval.identity, approval.connection, approval.fingerprint)
        if grant is not None and grant.approval_id == approval.id:
            out["grant"] = {
                "identity": grant.identity,
                "connection": grant.connection,
                "fingerprint": grant.fingerprint,
                "until": iso_time(grant.until),
                "granted_by": list(grant.granted_by),
            }
        return JSONResponse(out)

    async def approve(request: Request) -> JSONResponse:
        return await decide(request, True)

    async def deny(request: Request) -> JSONResponse:
        return await decide(request, False)

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                return await handler(request)
            except _Denied as denied:
                return denied.response

        return endpoint

    async def metrics_page(request: Request) -> PlainTextResponse:
        assert metrics is not None
        # gauges read the store and the approval state, and the other workers are asked
        # for their figures (bounded wait): off the event loop
        if worker_metrics is None:
            text = await run_in_threadpool(render_prometheus, metrics)
        else:
            timeout = _scrape_timeout(request, worker_metrics.timeout)
            text = await run_in_threadpool(worker_metrics.render, timeout)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    if metrics is not None:
        metrics.gauge_source(
            "wardgate_approvals_pending",
            "Held statements waiting for a reviewer.",
            (),
            lambda: [((), len(broker.pending()))],
        )
        metrics.gauge_source(
            "wardgate_audit_events",
            "Events in the audit log (its Merkle tree size).",
            (),
            lambda: [((), broker.store.size())],
        )

    routes = [
        Route("/api/health", health, methods=["GET"]),
        Route("/api/approvals", guarded(list_pending), methods=["GET"]),
        Route("/api/approvals/{id}", guarded(show), methods=["GET"]),
        Route("/api/approvals/{id}/approve", guarded(approve), methods=["POST"]),
        Route("/api/approvals/{id}/deny", guarded(deny), methods=["POST"]),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", metrics_page, methods=["GET"]))
    app = Starlette(routes=routes)
    app.state.broker = broker
    return app


def _scrape_timeout(request: Request, default: float) -> float:
    """How long to wait for the workers: at most half the scraper's own timeout
    (Prometheus sends it as a header), so the page arrives before the scraper gives up."""
    try:
        theirs = float(request.headers.get("x-prometheus-scrape-timeout-seconds", "inf"))
    except ValueError:
        return default
    return min(default, theirs / 2) if theirs > 0 else default


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(
    app: Starlette, host: str, port: int
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Start `app` on host:port in the running loop; return once it accepts connections.

    Stop it with ``server.should_exit = True; await task``. The bound port (useful with
    port 0) is ``server.servers[0].sockets[0].getsockname()[1]``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = _EmbeddedServer(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            task.result()
            raise OSError(f"the API server on {host}:{port} stopped during start")
        await asyncio.sleep(0.01)
    return server, task
