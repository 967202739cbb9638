"""The approval broker: holds review-verdict statements until reviewers decide.

Theory of operation. The engine, given a ``review`` Decision, first asks `active_grant`
(a standing grant lets the statement run at once), otherwise calls `request` (records
``approval_requested``, stores the pending request, sends the webhook in the background),
sends the agent a notice and `wait`s. Reviewers decide through `decide`, from the HTTP API
in this process or from the CLI in another; both write the same SQLite tables
(`ApprovalState`) and append ``approval_decided`` to the same audit store.

`wait` does not spin: it sleeps on an `asyncio.Event` that an in-process `decide` sets
(thread-safely, since the API runs `decide` in a worker thread), and wakes every
`poll_interval` seconds to read the request's status, which is how a decision made by the
CLI in another process is noticed. At the deadline it moves the request to ``expired``
with a compare-and-set, so a decision racing the deadline either wins or loses cleanly.

Evidence before effect: a request is recorded before it can be decided; a decision counts
only after its event is durable (see `ApprovalState.reserve_decision`); a grant exists only
after its ``approval_grant`` event. Requests left pending when a gateway stops are marked
``abandoned`` when their session ends (the waiter is cancelled), by `close`, or, after a
crash, by the next `start`. One gateway process owns
a store's pending requests (the SQLite store is single-node).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wardgate.pipeline.command import Command, Decision

from .durations import format_duration
from .model import (
    Approval,
    ApprovalForbidden,
    ApprovalInvalid,
    ApprovalNotFound,
    Decided,
    Grant,
    Outcome,
    ReviewerDirectory,
    Status,
    iso_time,
    shown_parameters,
)
from .state import ApprovalState

if TYPE_CHECKING:
    from wardgate.audit.store import AuditStore

    from .notify import Notifier

__all__ = ["ApprovalBroker", "DEFAULT_TTL_SECONDS", "new_approval_id"]

DEFAULT_TTL_SECONDS = 600.0
_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_approval_id() -> str:
    """Short, unambiguous, easy to type: ``ap-7k3mq9xz``."""
    return "ap-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


class ApprovalBroker:
    """Requests, waits for and records reviewers' decisions on held statements."""

    def __init__(
        self,
        store: AuditStore,
        *,
        reviewers: ReviewerDirectory,
        notifier: Notifier | None = None,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.reviewers = reviewers
        self.notifier = notifier
        self.poll_interval = poll_interval
        self.run_id = uuid.uuid4().hex
        self._clock = clock
        self._state = ApprovalState(store.path)
        self._wakeups: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        if notifier is not None and getattr(notifier, "store", None) is None:
            notifier.store = store

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Mark requests a previous gateway run left pending as abandoned."""
        self._loop = asyncio.get_running_loop()
        for approval_id in self._state.pending_ids(not_run_id=self.run_id):
            await self._abandon(approval_id, "the gateway stopped while the request was pending")

    async def close(self) -> None:
        """Abandon this run's pending requests, wake their waiters, flush notifications."""
        for approval_id in self._state.pending_ids(run_id=self.run_id):
            await self._abandon(approval_id, "the gateway is shutting down")
        for event in list(self._wakeups.values()):
            event.set()
        for _ in range(100):  # let woken waiters read their final status
            if not self._wakeups:
                break
            await asyncio.sleep(0.01)
        if self.notifier is not None:
            await self.notifier.aclose()

    async def _abandon(self, approval_id: str, why: str) -> None:
        if not self._state.finish(approval_id, Status.ABANDONED, self._clock()):
            return
        a = self._state.get(approval_id)
        assert a is not None
        await self.store.append(
            "approval_abandoned",
            session=a.session,
            identity=a.identity,
            connection=a.connection,
            rule=a.rule,
            meta={"approval_id": a.id, "reason": why},
        )

    # -- the engine's side ----------------------------------------------------------------

    def active_grant(self, identity: str, connection: str, fingerprint: str) -> Grant | None:
        """A standing grant covering this statement, or None."""
        return self._state.active_grant(identity, connection, fingerprint, self._clock())

    async def request(
        self,
        command: Command,
        decision: Decision,
        *,
        fingerprint: str,
        statement: str | None = None,
    ) -> Approval:
        """Record and store a pending request for `command` (its text and parameters
        already masked)."""
        self._loop = asyncio.get_running_loop()
        now = self._clock()
        ttl = decision.review_ttl_seconds or DEFAULT_TTL_SECONDS
        s = command.session
        approval = Approval(
            id=new_approval_id(),
            session=s.session_id,
            identity=s.identity,
            connection=s.connection,
            fingerprint=fingerprint,
            statement=command.text if statement is None else statement,
            rule=decision.rule,
            reason=s.reason,
            application_name=s.application_name,
            client_addr=s.client_addr,
            requested_at=now,
            expires_at=now + ttl,
            approvals_required=max(1, int(decision.approvals_required)),
            status=Status.PENDING,
            parameters=shown_parameters(command.parameters),
        )
        await self.store.append(
            "approval_requested",
            session=approval.session,
            identity=approval.identity,
            connection=approval.connection,
            verdict="review",
            rule=approval.rule,
            meta={
                "approval_id": approval.id,
                "statement": approval.statement,
                "parameters": list(approval.parameters),
                "fingerprint": fingerprint,
                "rule": approval.rule,
                "reason": approval.reason,
                "application_name": approval.application_name,
                "client_addr": approval.client_addr,
                "expires_at": iso_time(approval.expires_at),
                "ttl_seconds": ttl,
                "approvals_required": approval.approvals_required,
            },
        )
        self._state.insert(approval, self.run_id)
        if self.notifier is not None:
            self.notifier.notify("approval_requested", approval)
        return approval

    async def wait(self, approval_id: str, timeout: float) -> Outcome:  # noqa: ASYNC109
        """Sleep until the request is decided, abandoned, or `timeout` seconds pass."""
        loop = self._loop = asyncio.get_running_loop()
        event = self._wakeups.setdefault(approval_id, asyncio.Event())
        deadline = loop.time() + timeout
        try:
            while True:
                event.clear()
                approval = self._state.get(approval_id)
                if approval is None:
                    raise ApprovalNotFound(f"no approval request {approval_id!r}")
                if approval.status != Status.PENDING:
                    return self._outcome(approval, timeout)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(event.wait(), min(self.poll_interval, remaining))
                except TimeoutError:
                    pass
            if not self._state.finish(approval_id, Status.EXPIRED, self._clock()):
                approval = self._state.get(approval_id)
                assert approval is not None
                return self._outcome(approval, timeout)  # decided at the buzzer
            approval = self._state.get(approval_id)
            assert approval is not None
            await self.store.append(
                "approval_expired",
                session=approval.session,
                identity=approval.identity,
                connection=approval.connection,
                rule=approval.rule,
                meta={"approval_id": approval_id, "waited_seconds": timeout},
            )
            return self._outcome(approval, timeout)
        except asyncio.CancelledError:
            # the waiting session ended (the agent left, the gateway stops): the request
            # can run nothing now, so it must not wait in the reviewers' queue
            try:
                await self._abandon(approval_id, "the session ended while the request was pending")
            except Exception:  # the store is down: the next start abandons it
                pass
            raise
        finally:
            self._wakeups.pop(approval_id, None)

    def _outcome(self, approval: Approval, timeout: float) -> Outcome:
        if self.notifier is not None and approval.status in (
            Status.APPROVED,
            Status.DENIED,
            Status.EXPIRED,
        ):
            kind = "approval_expired" if approval.status == Status.EXPIRED else "approval_decided"
            self.notifier.notify(kind, approval)
        if approval.status == Status.APPROVED:
            return Outcome(
                True, False, approval.approvers, approval.deciding_reason, approval.status
            )
        if approval.status == Status.DENIED:
            deniers = tuple(d.reviewer for d in approval.decisions if not d.approve)
            reason = approval.deciding_reason or f"denied by {', '.join(deniers)}"
            return Outcome(False, False, deniers, reason, approval.status)
        if approval.status == Status.EXPIRED:
            reason = f"approval timed out after {format_duration(timeout)}"
            return Outcome(False, True, approval.approvers, reason, approval.status)
        return Outcome(
            False, False, (), "approval abandoned: the gateway is shutting down", approval.status
        )

    # -- the reviewers' side (any process) ------------------------------------------------

    def get(self, approval_id: str) -> Approval | None:
        return self._state.get(approval_id)

    def pending(self) -> list[Approval]:
        """Requests still waiting for a decision, oldest first."""
        return self._state.pending(self._clock())

    def decide(
        self,
        approval_id: str,
        reviewer: str,
        *,
        approve: bool,
        reason: str | None,
        grant_for_seconds: float | None = None,
    ) -> Approval:
        """Record one reviewer's decision; synchronous, usable from any process."""
        if not self.reviewers.is_reviewer(reviewer):
            raise ApprovalForbidden(f"{reviewer!r} is not a reviewer")
        current = self._state.get(approval_id)
        if current is None:
            raise ApprovalNotFound(f"no approval request {approval_id!r}")
        if approve and reviewer == current.identity:
            raise ApprovalForbidden(f"{reviewer!r} cannot approve their own request")
        if grant_for_seconds is not None and (not approve or grant_for_seconds <= 0):
            raise ApprovalInvalid("a grant needs an approval and a positive duration")
        now = self._clock()
        decided = Decided(reviewer, approve, reason, now, grant_for_seconds)
        self._state.reserve_decision(approval_id, decided, now)
        try:
            self.store.append_sync(
                "approval_decided",
                session=current.session,
                identity=current.identity,
                connection=current.connection,
                rule=current.rule,
                meta=self._decided_meta(current, decided),
            )
        except BaseException:
            self._state.drop_decision(approval_id, reviewer)
            raise
        approval, finalized = self._state.confirm_decision(approval_id, reviewer, now)
        try:
            if finalized and approval.status == Status.APPROVED:
                self._maybe_grant(approval, now)
        finally:
            self._wake(approval_id)
        return approval

    def _decided_meta(self, a: Approval, d: Decided) -> dict[str, Any]:
        return {
            "approval_id": a.id,
            "reviewer": d.reviewer,
            "decision": "approve" if d.approve else "deny",
            "reason": d.reason,
            "time": iso_time(d.decided_at),
            "grant_for_seconds": d.grant_for_seconds,
            "approvals_required": a.approvals_required,
        }

    def _maybe_grant(self, approval: Approval, now: float) -> None:
        """Grant only when every approving reviewer asked for one (shortest wins)."""
        approving = [d for d in approval.decisions if d.approve]
        if not approving or any(d.grant_for_seconds is None for d in approving):
            return
        seconds = min(d.grant_for_seconds or 0.0 for d in approving)
        grant = Grant(
            id=0,
            identity=approval.identity,
            connection=approval.connection,
            fingerprint=approval.fingerprint,
            until=now + seconds,
            approval_id=approval.id,
            granted_by=tuple(d.reviewer for d in approving),
            created_at=now,
        )
        self.store.append_sync(
            "approval_grant",
            session=approval.session,
            identity=approval.identity,
            connection=approval.connection,
            rule=approval.rule,
            meta={
                "approval_id": approval.id,
                "fingerprint": approval.fingerprint,
                "granted_by": list(grant.granted_by),
                "seconds": seconds,
                "until": iso_time(grant.until),
            },
        )
        self._state.add_grant(grant)

    def _wake(self, approval_id: str) -> None:
        event, loop = self._wakeups.get(approval_id), self._loop
        if event is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)
