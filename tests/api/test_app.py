"""The approvals HTTP API over a real broker and the real identity registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.approvals.helpers import StoreUnavailable, make_command, make_decision, open_store
from wardgate.api.app import create_app, serve_api
from wardgate.approvals.broker import ApprovalBroker
from wardgate.config import IdentityConfig
from wardgate.identity.registry import IdentityRegistry
from wardgate.secrets import SecretRef

TOKENS = {
    "alice": "tok-alice-0123456789",
    "bob": "tok-bob-0123456789",
    "ci-bot": "tok-ci-0123456789",
    "ops-lead": "tok-ops-0123456789",
    "gone": "tok-gone-0123456789",
}


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> IdentityRegistry:
    for name, token in TOKENS.items():
        monkeypatch.setenv(f"WG_TEST_TOKEN_{name.replace('-', '_').upper()}", token)

    def ident(name: str, **kw: Any) -> IdentityConfig:
        ref = SecretRef(f"env:WG_TEST_TOKEN_{name.replace('-', '_').upper()}")
        return IdentityConfig(name=name, token=ref, **kw)

    return IdentityRegistry(
        (
            ident("alice", roles=("reviewer",)),
            ident("bob", roles=("reviewer",)),
            ident("ci-bot", roles=("agent",), groups=("ci",)),
            ident("ops-lead", groups=("dba",)),
            ident("gone", roles=("reviewer",), disabled=True),
        ),
        reviewer_groups=("dba",),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    s = open_store(tmp_path / "audit.db")
    yield s
    s.close()


@pytest.fixture
def broker(store: Any, registry: IdentityRegistry) -> ApprovalBroker:
    return ApprovalBroker(store, reviewers=registry, poll_interval=0.05)


@pytest.fixture
def client(broker: ApprovalBroker, registry: IdentityRegistry) -> httpx.AsyncClient:
    # ASGITransport holds no connections, so the client needs no closing
    transport = httpx.ASGITransport(app=create_app(broker, registry))
    return httpx.AsyncClient(transport=transport, base_url="http://wardgate")


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


async def held(broker: ApprovalBroker, **kw: Any) -> str:
    return (await broker.request(make_command(), make_decision(**kw), fingerprint="fp")).id


async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {TOKENS['gone']}"},
    ],
)
async def test_401_without_a_valid_token(client: httpx.AsyncClient, headers: dict) -> None:
    r = await client.get("/api/approvals", headers=headers)
    assert r.status_code == 401 and "error" in r.json()
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_list_pending_as_reviewer_and_group_reviewer(
    client: httpx.AsyncClient, broker: ApprovalBroker
) -> None:
    approval_id = await held(broker)
    for who in ("alice", "ops-lead"):
        r = await client.get("/api/approvals", headers=auth(who))
        assert r.status_code == 200
        [item] = r.json()["approvals"]
        assert item["id"] == approval_id and item["status"] == "pending"
        assert item["statement"] == "DELETE FROM orders" and item["reason"] == "nightly cleanup"
        assert item["application_name"] == "psql" and item["identity"] == "ci-bot"
    r = await client.get(f"/api/approvals/{approval_id}", headers=auth("alice"))
    assert r.json()["approval"]["rule"] == "baseline/review-delete-without-where"


async def test_403_for_agents(client: httpx.AsyncClient, broker: ApprovalBroker) -> None:
    approval_id = await held(broker)
    r = await client.get("/api/approvals", headers=auth("ci-bot"))
    assert r.status_code == 403 and "not a reviewer" in r.json()["error"]
    r = await client.post(f"/api/approvals/{approval_id}/approve", headers=auth("ci-bot"))
    assert r.status_code == 403
    assert broker.get(approval_id).status == "pending"


async def test_403_for_self_approval(client: httpx.AsyncClient, broker: ApprovalBroker) -> None:
    own = (
        await broker.request(make_command(identity="alice"), make_decision(), fingerprint="fp")
    ).id
    r = await client.post(f"/api/approvals/{own}/approve", headers=auth("alice"), json={})
    assert r.status_code == 403 and "own request" in r.json()["error"]


async def test_approve_wakes_the_waiting_engine(
    client: httpx.AsyncClient, broker: ApprovalBroker, store: Any
) -> None:
    approval_id = await held(broker)
    waiter = asyncio.create_task(broker.wait(approval_id, 10))
    r = await client.post(
        f"/api/approvals/{approval_id}/approve", headers=auth("bob"), json={"reason": "ok"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["approval"]["status"] == "approved" and "grant" not in r.json()
    outcome = await asyncio.wait_for(waiter, 2)
    assert outcome.approved and outcome.reviewers == ("bob",)
    r = await client.post(f"/api/approvals/{approval_id}/approve", headers=auth("alice"))
    assert r.status_code == 409 and "already approved" in r.json()["error"]
    r = await client.get("/api/approvals", headers=auth("alice"))
    assert r.json()["approvals"] == []


async def test_approve_for_a_duration_creates_a_grant(
    client: httpx.AsyncClient, broker: ApprovalBroker
) -> None:
    approval_id = await held(broker)
    r = await client.post(
        f"/api/approvals/{approval_id}/approve", headers=auth("alice"), json={"for": "1h"}
    )
    assert r.status_code == 200
    grant = r.json()["grant"]
    assert grant["identity"] == "ci-bot" and grant["granted_by"] == ["alice"]
    assert broker.active_grant("ci-bot", "prod", "fp") is not None


async def test_deny_requires_a_reason(client: httpx.AsyncClient, broker: ApprovalBroker) -> None:
    approval_id = await held(broker)
    r = await client.post(f"/api/approvals/{approval_id}/deny", headers=auth("alice"), json={})
    assert r.status_code == 400 and "reason" in r.json()["error"]
    r = await client.post(
        f"/api/approvals/{approval_id}/deny", headers=auth("alice"), json={"reason": "no"}
    )
    assert r.status_code == 200 and r.json()["approval"]["status"] == "denied"
    r = await client.post(
        f"/api/approvals/{approval_id}/deny", headers=auth("bob"), json={"reason": "no"}
    )
    assert r.status_code == 409


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[1]", "JSON object"),
        (b"{bad", "JSON object"),
        (b'{"reason": 5}', "string"),
        (b'{"for": "soon"}', "invalid duration"),
    ],
)
async def test_400_bad_bodies(
    client: httpx.AsyncClient, broker: ApprovalBroker, body: bytes, fragment: str
) -> None:
    approval_id = await held(broker)
    r = await client.post(
        f"/api/approvals/{approval_id}/approve", headers=auth("alice"), content=body
    )
    assert r.status_code == 400 and fragment in r.json()["error"]
    assert broker.get(approval_id).status == "pending"


async def test_404_unknown(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/approvals/ap-unknown/approve", headers=auth("alice"))
    assert r.status_code == 404
    r = await client.get("/api/approvals/ap-unknown", headers=auth("alice"))
    assert r.status_code == 404


async def test_503_when_the_store_is_down(
    client: httpx.AsyncClient, broker: ApprovalBroker, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = await held(broker)
    failure = StoreUnavailable

    def broken(*a: Any, **k: Any) -> Any:
        raise failure("disk on fire")

    monkeypatch.setattr(store, "append_sync", broken)
    r = await client.post(f"/api/approvals/{approval_id}/approve", headers=auth("alice"))
    assert r.status_code == 503 and "not recorded" in r.json()["error"]
    assert broker.get(approval_id).status == "pending"


async def test_serve_api_under_uvicorn(broker: ApprovalBroker, registry: IdentityRegistry) -> None:
    server, task = await serve_api(create_app(broker, registry), "127.0.0.1", 0)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        approval_id = await held(broker)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            assert (await c.get("/api/health")).status_code == 200
            r = await c.post(
                f"/api/approvals/{approval_id}/deny", headers=auth("alice"), json={"reason": "no"}
            )
            assert r.status_code == 200
        with pytest.raises(OSError):
            await serve_api(create_app(broker, registry), "127.0.0.1", port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)


async def test_metrics_page_in_prometheus_text(
    broker: ApprovalBroker, registry: IdentityRegistry, store: Any
) -> None:
    from wardgate.metrics import Metrics

    metrics = Metrics()
    metrics.statements[("shop", "allow")] += 3
    metrics.refusals[("shop", "deny", 'baseline/deny-"drop"')] += 1
    transport = httpx.ASGITransport(app=create_app(broker, registry, metrics=metrics))
    client = httpx.AsyncClient(transport=transport, base_url="http://wardgate")
    await held(broker)
    r = await client.get("/metrics")  # no token: a scrape target
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    assert "# TYPE wardgate_statements_total counter" in lines
    assert 'wardgate_statements_total{connection="shop",verdict="allow"} 3' in lines
    # label values are escaped, so a rule name cannot break the page
    assert (
        'wardgate_statements_refused_total{connection="shop",verdict="deny",'
        'rule="baseline/deny-\\"drop\\""} 1' in lines
    )
    assert "wardgate_approvals_pending 1" in lines
    assert f"wardgate_audit_events {store.size()}" in lines
    assert store.size() > 0
    # an agent's token does not matter here, and no token, statement or identity is shown
    assert "ci-bot" not in r.text and "DELETE FROM orders" not in r.text


async def test_metrics_can_be_turned_off(broker: ApprovalBroker, registry: IdentityRegistry):
    transport = httpx.ASGITransport(app=create_app(broker, registry, metrics=None))
    client = httpx.AsyncClient(transport=transport, base_url="http://wardgate")
    assert (await client.get("/metrics")).status_code == 404


async def test_agent_text_is_exact_but_escaped_in_the_json(
    client: httpx.AsyncClient, broker: ApprovalBroker
) -> None:
    """An agent's bidi override, C1 control or line separator arrives as a JSON escape
    (a reviewer reading `curl` output sees it), and the parsed value is exact."""
    text = "DELETE FROM orders -- \u202eyrtne\x9b[2J\u2028"
    a = await broker.request(make_command(text), make_decision(), fingerprint="fp")
    r = await client.get(f"/api/approvals/{a.id}", headers=auth("alice"))
    assert r.status_code == 200
    assert r.json()["approval"]["statement"] == text
    for raw in ("\u202e", "\x9b", "\u2028"):
        assert raw not in r.text
    assert "\\u202e" in r.text and "\\u009b" in r.text and "\\u2028" in r.text
