"""Webhook notifications against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.approvals.helpers import make_command, make_decision
from wardgate.approvals.broker import ApprovalBroker
from wardgate.approvals.model import StaticReviewers
from wardgate.approvals.notify import Notifier, WebhookTarget, redact_url


class Hook:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.hits: dict[str, int] = {}
        self.url = ""


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            state.received.append((self.path, body))
            if self.path.startswith("/fail") or (
                self.path.startswith("/flaky") and state.hits[self.path] == 1
            ):
                self.send_response(503)
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_broker(store: Any, targets: dict[str, Any], **kw: Any) -> ApprovalBroker:
    notifier = Notifier(targets, tries=3, backoff=0.01)
    return ApprovalBroker(
        store, reviewers=StaticReviewers.of({"alice"}), notifier=notifier, poll_interval=0.05, **kw
    )


async def test_json_on_request_and_decision(store: Any, hook: Hook) -> None:
    broker = make_broker(store, {"baseline": {"url": hook.url + "/ok", "format": "json"}})
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    waiter = asyncio.create_task(broker.wait(a.id, 10))
    broker.decide(a.id, "alice", approve=False, reason="not now")
    await waiter
    await broker.notifier.drain()
    assert [b["event"] for _, b in hook.received] == ["approval_requested", "approval_decided"]
    requested, decided = (b for _, b in hook.received)
    assert requested["approval"]["id"] == a.id
    assert requested["approval"]["statement"] == "DELETE FROM orders"
    assert requested["approval"]["reason"] == "nightly cleanup"
    assert "ci-bot" in requested["text"] and a.id in requested["text"]
    assert decided["approval"]["status"] == "denied" and "not now" in decided["text"]
    await broker.close()


async def test_slack_format(store: Any, hook: Hook) -> None:
    broker = make_broker(store, {"*": WebhookTarget(hook.url + "/slack", "slack")})
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    await broker.notifier.drain()
    [(path, body)] = hook.received
    assert path == "/slack" and set(body) == {"text", "blocks"}
    assert a.id in body["text"]
    assert body["blocks"][0]["type"] == "section"
    assert any(f"wardgate approvals approve {a.id}" in json.dumps(b) for b in body["blocks"])
    await broker.close()


async def test_retry_with_backoff_then_success(store: Any, hook: Hook) -> None:
    broker = make_broker(store, {"baseline": {"url": hook.url + "/flaky"}})
    await broker.request(make_command(), make_decision(), fingerprint="fp")
    await broker.notifier.drain()
    assert hook.hits["/flaky"] == 2
    assert not [e for e in store.events() if e.kind == "notification_failed"]
    await broker.close()


async def test_failure_is_recorded_without_the_secret_path(store: Any, hook: Hook) -> None:
    broker = make_broker(store, {"baseline": {"url": hook.url + "/fail/T0KEN-SECRET"}})
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    await broker.notifier.drain()
    assert hook.hits["/fail/T0KEN-SECRET"] == 3
    [ev] = [e for e in store.events() if e.kind == "notification_failed"]
    assert ev.meta["approval_id"] == a.id and ev.meta["error"] == "HTTP 503"
    assert ev.meta["tries"] == 3 and ev.meta["notification"] == "approval_requested"
    assert "T0KEN" not in json.dumps(ev.meta) and ev.meta["target"].startswith(hook.url)
    await broker.close()


async def test_unreachable_endpoint_never_delays_the_request(store: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    notifier = Notifier({"baseline": {"url": dead}}, tries=3, backoff=0.2)
    broker = ApprovalBroker(store, reviewers=StaticReviewers.of({"alice"}), notifier=notifier)
    t0 = time.monotonic()
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    broker.decide(a.id, "alice", approve=True, reason=None)
    assert time.monotonic() - t0 < 0.3  # backoff alone would take 0.6 s
    await notifier.drain()
    [ev] = [e for e in store.events() if e.kind == "notification_failed"]
    assert ev.meta["error"] == "ConnectError"
    await broker.close()


async def test_no_target_for_other_policies(store: Any, hook: Hook) -> None:
    broker = make_broker(store, {"payments": {"url": hook.url + "/ok"}})
    await broker.request(make_command(), make_decision(), fingerprint="fp")
    await broker.notifier.drain()
    assert hook.received == []
    await broker.close()


def test_target_validation_and_redaction() -> None:
    with pytest.raises(ValueError, match="json or slack"):
        WebhookTarget("https://example.invalid/x", "xml")
    with pytest.raises(ValueError, match="http"):
        WebhookTarget.from_config({"url": "file:///etc/passwd"})
    with pytest.raises(ValueError, match="needs a url"):
        WebhookTarget.from_config({"format": "slack"})
    assert (
        WebhookTarget.from_config({"webhook": "https://h/x", "format": "slack"}).format == "slack"
    )
    assert (
        redact_url("https://hooks.slack.com/services/T/B/SECRET?x=1") == "https://hooks.slack.com/…"
    )
    with pytest.raises(ValueError, match="unknown notification kind"):
        Notifier({}).notify("x", None)  # type: ignore[arg-type]


async def test_from_policies_and_event_filter(store: Any, hook: Hook) -> None:
    from wardgate.policy.model import PolicySpec

    policies = [
        PolicySpec.model_validate({"name": "quiet"}),
        PolicySpec.model_validate(
            {"name": "baseline", "notify": {"url": hook.url + "/p", "events": ["decided"]}}
        ),
    ]
    notifier = Notifier.from_policies(policies, store, backoff=0.01)
    assert notifier is not None and set(notifier.targets) == {"baseline"}
    assert Notifier.from_policies(policies[:1], store) is None
    broker = ApprovalBroker(
        store, reviewers=StaticReviewers.of({"alice"}), notifier=notifier, poll_interval=0.05
    )
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    waiter = asyncio.create_task(broker.wait(a.id, 10))
    broker.decide(a.id, "alice", approve=True, reason=None)
    await waiter
    await notifier.drain()
    assert [b["event"] for _, b in hook.received] == ["approval_decided"]
    await broker.close()
