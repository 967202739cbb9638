"""The broker against a real SQLite store file: requests, decisions, waits, grants."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from tests.approvals.helpers import StoreUnavailable, kinds, make_command, make_decision
from wardgate.approvals.broker import ApprovalBroker
from wardgate.approvals.model import (
    ApprovalForbidden,
    ApprovalInvalid,
    ApprovalNotFound,
    ApprovalNotPending,
    StaticReviewers,
    Status,
)

REVIEWERS = StaticReviewers.of({"alice", "bob", "carol", "ci-bot-reviewer"})


def broker_for(store: Any, **kw: Any) -> ApprovalBroker:
    kw.setdefault("poll_interval", 0.05)
    return ApprovalBroker(store, reviewers=REVIEWERS, **kw)


async def test_request_records_event_and_lists_pending(store: Any) -> None:
    broker = broker_for(store)
    await broker.start()
    a = await broker.request(make_command(), make_decision(), fingerprint="fp1")
    assert a.id.startswith("ap-") and a.status == Status.PENDING
    [ev] = [e for e in store.events() if e.kind == "approval_requested"]
    assert ev.identity == "ci-bot" and ev.connection == "prod" and ev.session == "s-1"
    assert ev.rule == "baseline/review-delete-without-where" and ev.verdict == "review"
    m = ev.meta
    assert m["approval_id"] == a.id and m["statement"] == "DELETE FROM orders"
    assert m["reason"] == "nightly cleanup" and m["application_name"] == "psql"
    assert m["client_addr"] == "10.0.0.7:51234" and m["approvals_required"] == 1
    assert m["expires_at"].endswith("Z")
    assert [p.id for p in broker.pending()] == [a.id]


async def test_in_process_approve_wakes_waiter_quickly(store: Any) -> None:
    broker = broker_for(store, poll_interval=30.0)  # only the event can wake it in time
    a = await broker.request(make_command(), make_decision(), fingerprint="fp1")
    waiter = asyncio.create_task(broker.wait(a.id, timeout=20))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    # the HTTP API calls decide from a worker thread
    await asyncio.to_thread(broker.decide, a.id, "alice", approve=True, reason="looks fine")
    outcome = await asyncio.wait_for(waiter, 2)
    assert time.monotonic() - t0 < 1.0
    assert outcome.approved and not outcome.timed_out
    assert outcome.reviewers == ("alice",) and outcome.reason == "looks fine"
    [ev] = [e for e in store.events() if e.kind == "approval_decided"]
    assert ev.meta["reviewer"] == "alice" and ev.meta["decision"] == "approve"
    assert ev.meta["reason"] == "looks fine" and ev.meta["time"].endswith("Z")
    assert broker.pending() == []


async def test_deny_gives_reviewers_reason(store: Any) -> None:
    broker = broker_for(store)
    a = await broker.request(make_command(), make_decision(), fingerprint="fp1")
    waiter = asyncio.create_task(broker.wait(a.id, timeout=10))
    await asyncio.sleep(0)
    broker.decide(a.id, "bob", approve=False, reason="not during business hours")
    outcome = await waiter
    assert not outcome.approved and not outcome.timed_out
    assert outcome.reason == "not during business hours" and outcome.reviewers == ("bob",)
    assert outcome.status == Status.DENIED


async def test_timeout_records_expired(store: Any) -> None:
    broker = broker_for(store)
    a = await broker.request(make_command(), make_decision(ttl=0.3), fingerprint="fp1")
    t0 = time.monotonic()
    outcome = await broker.wait(a.id, timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 2
    assert outcome.timed_out and not outcome.approved
    assert outcome.reason == "approval timed out after 0.3s"
    assert kinds(store)[-1] == "approval_expired"
    with pytest.raises(ApprovalNotPending, match="expired"):
        broker.decide(a.id, "alice", approve=True, reason=None)


async def test_rules_reviewer_self_unknown_and_double(store: Any) -> None:
    broker = broker_for(store)
    own = await broker.request(
        make_command(identity="ci-bot-reviewer"), make_decision(), fingerprint="fp1"
    )
    with pytest.raises(ApprovalForbidden, match="not a reviewer"):
        broker.decide(own.id, "mallory", approve=True, reason=None)
    with pytest.raises(ApprovalForbidden, match="own request"):
        broker.decide(own.id, "ci-bot-reviewer", approve=True, reason=None)
    with pytest.raises(ApprovalNotFound):
        broker.decide("ap-nope", "alice", approve=True, reason=None)
    with pytest.raises(ApprovalInvalid):
        broker.decide(own.id, "alice", approve=False, reason="x", grant_for_seconds=60)
    broker.decide(own.id, "alice", approve=True, reason=None)
    with pytest.raises(ApprovalNotPending, match="already approved"):
        broker.decide(own.id, "bob", approve=False, reason="too late")
    assert kinds(store).count("approval_decided") == 1


async def test_two_distinct_approvals_required(store: Any) -> None:
    broker = broker_for(store)
    a = await broker.request(make_command(), make_decision(required=2), fingerprint="fp1")
    waiter = asyncio.create_task(broker.wait(a.id, timeout=10))
    after_one = broker.decide(a.id, "alice", approve=True, reason="ok")
    assert after_one.status == Status.PENDING and after_one.approvers == ("alice",)
    with pytest.raises(ApprovalNotPending, match="alice already approved"):
        broker.decide(a.id, "alice", approve=True, reason="again")
    await asyncio.sleep(0.1)
    assert not waiter.done()
    final = broker.decide(a.id, "bob", approve=True, reason="ok too")
    assert final.status == Status.APPROVED
    outcome = await waiter
    assert outcome.approved and set(outcome.reviewers) == {"alice", "bob"}


async def test_one_deny_decides_among_several(store: Any) -> None:
    broker = broker_for(store)
    a = await broker.request(make_command(), make_decision(required=3), fingerprint="fp1")
    broker.decide(a.id, "alice", approve=True, reason=None)
    assert broker.decide(a.id, "carol", approve=False, reason="no").status == Status.DENIED
    outcome = await broker.wait(a.id, timeout=5)
    assert not outcome.approved and outcome.reason == "no"


async def test_grant_created_recorded_and_scoped(store: Any) -> None:
    broker = broker_for(store)
    a = await broker.request(make_command(), make_decision(), fingerprint="fp-delete")
    assert broker.active_grant("ci-bot", "prod", "fp-delete") is None
    broker.decide(a.id, "alice", approve=True, reason="recurring job", grant_for_seconds=3600)
    g = broker.active_grant("ci-bot", "prod", "fp-delete")
    assert g is not None and g.approval_id == a.id and g.granted_by == ("alice",)
    assert 3590 < g.until - time.time() <= 3600
    assert broker.active_grant("other-bot", "prod", "fp-delete") is None
    assert broker.active_grant("ci-bot", "staging", "fp-delete") is None
    assert broker.active_grant("ci-bot", "prod", "fp-other") is None
    [ev] = [e for e in store.events() if e.kind == "approval_grant"]
    assert ev.meta["approval_id"] == a.id and ev.meta["seconds"] == 3600
    assert ev.meta["granted_by"] == ["alice"] and ev.identity == "ci-bot"


async def test_grant_expires(store: Any) -> None:
    now = [1000.0]
    broker = broker_for(store, clock=lambda: now[0])
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    broker.decide(a.id, "alice", approve=True, reason=None, grant_for_seconds=60)
    now[0] += 59
    assert broker.active_grant("ci-bot", "prod", "fp") is not None
    now[0] += 2
    assert broker.active_grant("ci-bot", "prod", "fp") is None


async def test_grant_needs_every_approver_to_ask(store: Any) -> None:
    broker = broker_for(store)
    a = await broker.request(make_command(), make_decision(required=2), fingerprint="fp")
    broker.decide(a.id, "alice", approve=True, reason=None, grant_for_seconds=3600)
    broker.decide(a.id, "bob", approve=True, reason=None)
    assert broker.active_grant("ci-bot", "prod", "fp") is None
    b = await broker.request(make_command(), make_decision(required=2), fingerprint="fp")
    broker.decide(b.id, "alice", approve=True, reason=None, grant_for_seconds=3600)
    broker.decide(b.id, "bob", approve=True, reason=None, grant_for_seconds=600)
    g = broker.active_grant("ci-bot", "prod", "fp")
    assert g is not None and g.until - time.time() <= 600


async def test_store_failure_leaves_decision_uncounted(store: Any, monkeypatch) -> None:
    broker = broker_for(store)
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    failure = StoreUnavailable

    def broken(*args: Any, **kw: Any) -> Any:
        raise failure("disk on fire")

    monkeypatch.setattr(store, "append_sync", broken)
    with pytest.raises(failure):
        broker.decide(a.id, "alice", approve=True, reason=None)
    monkeypatch.undo()
    assert broker.get(a.id).status == Status.PENDING and broker.get(a.id).decisions == ()
    # the reviewer can try again once the store is back
    assert broker.decide(a.id, "alice", approve=True, reason=None).status == Status.APPROVED


async def test_close_abandons_and_wakes_waiters(store: Any) -> None:
    broker = broker_for(store, poll_interval=30.0)
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    waiter = asyncio.create_task(broker.wait(a.id, timeout=60))
    await asyncio.sleep(0.02)
    await broker.close()
    outcome = await asyncio.wait_for(waiter, 2)
    assert not outcome.approved and "abandoned" in (outcome.reason or "")
    [ev] = [e for e in store.events() if e.kind == "approval_abandoned"]
    assert ev.meta["approval_id"] == a.id


async def test_start_abandons_previous_runs_requests(store: Any) -> None:
    crashed = broker_for(store)
    left = await crashed.request(make_command(), make_decision(), fingerprint="fp")
    # the crashed gateway never closes; a new run starts on the same store
    fresh = broker_for(store)
    await fresh.start()
    assert fresh.get(left.id).status == Status.ABANDONED
    assert fresh.pending() == []
    [ev] = [e for e in store.events() if e.kind == "approval_abandoned"]
    assert ev.meta["approval_id"] == left.id and "stopped" in ev.meta["reason"]
    with pytest.raises(ApprovalNotPending, match="abandoned"):
        fresh.decide(left.id, "alice", approve=True, reason=None)


CLI_DECIDE = textwrap.dedent(
    """
    from wardgate.audit.store import AuditStore
    from wardgate.approvals.broker import ApprovalBroker
    from wardgate.approvals.model import StaticReviewers
    store = AuditStore.open({path!r})
    broker = ApprovalBroker(store, reviewers=StaticReviewers.of({{"alice"}}))
    print(broker.decide({id!r}, "alice", approve=True, reason="from the cli").status)
    store.close()
    """
)


async def test_decision_from_another_process_is_noticed_by_polling(store: Any) -> None:
    broker = broker_for(store, poll_interval=0.1)
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    waiter = asyncio.create_task(broker.wait(a.id, timeout=20))
    code = CLI_DECIDE.format(path=str(store.path), id=a.id)
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "approved"
    outcome = await asyncio.wait_for(waiter, 2)
    assert outcome.approved and outcome.reason == "from the cli"


async def test_gateway_store_appends_after_another_process_appended(store: Any) -> None:
    """The CLI's approval_decided lands between two of the gateway's own appends."""
    broker = broker_for(store, poll_interval=0.1)
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    code = CLI_DECIDE.format(path=str(store.path), id=a.id)
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    await broker.request(make_command(), make_decision(), fingerprint="fp2")
    seqs = [e.seq for e in store.events()]
    assert seqs == list(range(len(seqs))) and len(seqs) == 3
