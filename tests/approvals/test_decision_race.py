"""Two reviewers deciding one request at once: the loser is told, nothing contradicts.

A decision is reserved, its audit event appended, then confirmed. Alice's approval in
flight (reserved, event being written) and Bob's denial at the same moment: Bob's
denial was appended as an `approval_decided` event that did not count (the request
ended approved, the statement ran), so the log said "bob denied" next to a statement
that ran, and Bob's answer read `approved (denied by bob)`. A decision is now refused
(409, nothing appended) while another reviewer's decision on the same request is in
flight; a reservation left by a process that died stops blocking after a while.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.approvals.helpers import make_command, make_decision
from wardgate.approvals.broker import ApprovalBroker
from wardgate.approvals.model import ApprovalNotPending, Decided, StaticReviewers, Status


async def test_a_decision_while_another_is_in_flight_is_refused(store: Any) -> None:
    broker = ApprovalBroker(store, reviewers=StaticReviewers.of({"alice", "bob"}))
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    now = time.time()
    # alice's approval: reserved, its event not yet durable
    broker._state.reserve_decision(a.id, Decided("alice", True, "ok", now), now)
    with pytest.raises(ApprovalNotPending, match="alice is deciding"):
        broker.decide(a.id, "bob", approve=False, reason="no")
    assert not [e for e in store.events() if e.kind == "approval_decided"]
    # alice's decision completes: bob's denial is now refused as too late, not recorded
    broker._state.confirm_decision(a.id, "alice", now)
    with pytest.raises(ApprovalNotPending, match="already approved"):
        broker.decide(a.id, "bob", approve=False, reason="no")
    assert broker.get(a.id).status == Status.APPROVED


async def test_a_stale_reservation_does_not_block(store: Any) -> None:
    broker = ApprovalBroker(store, reviewers=StaticReviewers.of({"alice", "bob"}))
    a = await broker.request(make_command(), make_decision(), fingerprint="fp")
    old = time.time() - 3600  # a process that died between reserve and confirm
    broker._state.reserve_decision(a.id, Decided("alice", True, None, old), old)
    assert broker.decide(a.id, "bob", approve=False, reason="no").status == Status.DENIED
