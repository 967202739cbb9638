"""Webhook notifications when an approval is requested and when it is decided.

Theory of operation: a `Notifier` maps a policy name (the part of a rule name before
``/``; ``"*"`` for every policy) to a `WebhookTarget` (URL and format: ``json`` or
``slack``). `notify` only *schedules* a delivery as a background task on the running loop
and returns at once, so the path that holds or decides a statement never waits on the
network. A delivery POSTs with httpx, retrying failures (connection errors, timeouts,
non-2xx answers) with exponential backoff; when every try fails it appends a
``notification_failed`` event to the audit store. Webhook URLs are often secrets (Slack's
carry a token in the path), so events and messages name only the scheme and host.

Bodies. ``json``: ``{"event": kind, "text": summary, "approval": Approval.to_json()}``.
``slack``: ``{"text": summary, "blocks": [...]}`` (section + fields + how to decide), which
Slack incoming webhooks and compatible tools (Mattermost, Rocket.Chat) accept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from wardgate.termtext import shown, slack_text

from .durations import format_duration
from .model import Approval, Status, format_parameters

__all__ = ["Notifier", "WebhookTarget", "notification_body", "redact_url"]

log = logging.getLogger(__name__)

_KINDS = ("approval_requested", "approval_decided", "approval_expired")


_EVENT_OF_KIND = {
    "approval_requested": "requested",
    "approval_decided": "decided",
    "approval_expired": "decided",
}


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    format: str = "json"  # json | slack
    # which notifications to send: "requested" and/or "decided" (expiry counts as decided)
    events: frozenset[str] = frozenset({"requested", "decided"})

    def __post_init__(self) -> None:
        if not self.events <= {"requested", "decided"}:
            raise ValueError(f"webhook events must be requested/decided, not {sorted(self.events)}")
        if self.format not in ("json", "slack"):
            raise ValueError(f"webhook format must be json or slack, not {self.format!r}")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http(s): {redact_url(self.url)}")

    @classmethod
    def from_config(cls, value: Any) -> WebhookTarget:
        """Accept a WebhookTarget, {"url"|"webhook": ..., "format": ...} or an object."""
        if isinstance(value, WebhookTarget):
            return value
        if isinstance(value, Mapping):
            url = value.get("url") or value.get("webhook")
            fmt = value.get("format", "json")
            events = value.get("events")
        else:
            url = getattr(value, "url", None) or getattr(value, "webhook", None)
            fmt = getattr(value, "format", "json") or "json"
            events = getattr(value, "events", None)
        if hasattr(url, "resolve"):  # a SecretRef
            url = url.resolve()
        if not url:
            raise ValueError("a webhook notification needs a url")
        if events is None:
            return cls(str(url), str(fmt))
        return cls(str(url), str(fmt), frozenset(str(e) for e in events))


def redact_url(url: str) -> str:
    """scheme://host[:port]/… : never the path or query, which may hold a token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _summary(kind: str, a: Approval, esc: Callable[[object], str] = shown) -> str:
    """The one-line summary; `esc` makes what agents chose (statement, parameters,
    reason, application) inert for where it is read: a terminal or chat (`shown`),
    or Slack mrkdwn (`slack_text`)."""
    statement = a.statement if len(a.statement) <= 300 else a.statement[:297] + "..."
    if kind == "approval_requested":
        ttl = format_duration(max(0.0, a.expires_at - a.requested_at))
        why = f' — reason: "{esc(a.reason)}"' if a.reason else ""
        need = f" ({a.approvals_required} approvals needed)" if a.approvals_required > 1 else ""
        params = format_parameters(a.parameters, 300)
        with_params = f" with {esc(params)}" if params else ""
        return (
            f"wardgate: {esc(a.identity)} on {esc(a.connection)} asks to run "
            f"`{esc(statement)}`{with_params} (rule {esc(a.rule)}){why}. "
            f"Approval {a.id}{need}, expires in {ttl}."
        )
    if kind == "approval_expired":
        return (
            f"wardgate: approval {a.id} for {esc(a.identity)} on {esc(a.connection)} "
            "expired undecided."
        )
    reviewers = ", ".join(d.reviewer for d in a.decisions) or "nobody"
    reason = a.deciding_reason
    verb = "approved" if a.status == Status.APPROVED else "denied"
    return (
        f"wardgate: approval {a.id} for {esc(a.identity)} on {esc(a.connection)} {verb} "
        f"by {esc(reviewers)}" + (f': "{esc(reason)}"' if reason else ".")
    )


def _cut(text: str, limit: int = 2900) -> str:
    """At most `limit` characters (Slack's section limit is 3,000), the cut said."""
    if len(text) <= limit:
        return text
    return text[: limit - 40] + f" … [cut: {len(text):,} characters in all]"


def notification_body(kind: str, approval: Approval, fmt: str) -> dict[str, Any]:
    """The JSON document POSTed for `kind` in format `fmt`.

    ``json``: `approval` is exact (machine-readable); `text` is for people, with control
    and invisible characters shown as escapes. ``slack``: every agent-chosen value is
    escaped for mrkdwn (`slack_text`), so a statement cannot close its code block, mention
    `@channel` or add a link to the reviewers' channel."""
    if fmt == "json":
        return {"event": kind, "text": _summary(kind, approval), "approval": approval.to_json()}
    text = _summary(kind, approval, slack_text)
    a = approval
    esc = slack_text
    fields = [
        {"type": "mrkdwn", "text": f"*Identity*\n{esc(a.identity)}"},
        {"type": "mrkdwn", "text": f"*Connection*\n{esc(a.connection)}"},
        {"type": "mrkdwn", "text": f"*Rule*\n{esc(a.rule)}"},
        {"type": "mrkdwn", "text": f"*Status*\n{a.status}"},
    ]
    if a.application_name:
        fields.append({"type": "mrkdwn", "text": f"*Application*\n{esc(a.application_name)}"})
    if a.reason:
        fields.append({"type": "mrkdwn", "text": f"*Reason*\n{esc(a.reason)}"})
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "section", "fields": fields[:10]},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"```{_cut(slack_text(a.statement, newlines=True))}```",
            },
        },
    ]
    if a.parameters:
        shown_params = _cut(esc(format_parameters(a.parameters)))
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Parameters*\n```{shown_params}```"},
            }
        )
    if kind == "approval_requested":
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"`wardgate approvals approve {a.id} --as YOU` · "
                        f"`wardgate approvals deny {a.id} --as YOU --reason TEXT`",
                    }
                ],
            }
        )
    return {"text": text, "blocks": blocks}


class Notifier:
    """Sends approval webhooks in the background; records deliveries that fail."""

    def __init__(
        self,
        targets: Mapping[str, Any],
        *,
        store: Any = None,
        tries: int = 3,
        backoff: float = 0.5,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.targets = {name: WebhookTarget.from_config(t) for name, t in targets.items()}
        self.store = store
        self.tries = max(1, tries)
        self.backoff = backoff
        self.timeout = timeout
        self._client = client
        self._own_client = client is None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def from_policies(cls, policies: Any, store: Any = None, **kw: Any) -> Notifier | None:
        """A notifier for every policy with a ``notify`` section; None when none has one."""
        targets = {
            p.name: p.notify for p in policies or () if getattr(p, "notify", None) is not None
        }
        return cls(targets, store=store, **kw) if targets else None

    def target_for(self, rule: str) -> WebhookTarget | None:
        policy = rule.split("/", 1)[0]
        return self.targets.get(policy) or self.targets.get("*")

    def notify(self, kind: str, approval: Approval) -> asyncio.Task[None] | None:
        """Schedule a delivery (call on the event loop); returns the task, or None."""
        if kind not in _KINDS:
            raise ValueError(f"unknown notification kind {kind!r}")
        target = self.target_for(approval.rule)
        if target is None or _EVENT_OF_KIND[kind] not in target.events:
            return None
        # deliveries about one approval go out in order (a "decided" message never
        # overtakes its "requested"), each after the previous one finished or gave up
        previous = self._last.get(approval.id)
        task = asyncio.get_running_loop().create_task(
            self._deliver_after(previous, target, kind, approval)
        )
        self._last[approval.id] = task
        task.add_done_callback(
            lambda t, key=approval.id: (
                self._last.pop(key, None) if self._last.get(key) is t else None
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for every scheduled delivery (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self, grace: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self.drain(), grace)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    async def _deliver_after(
        self, previous: asyncio.Task | None, target: WebhookTarget, kind: str, approval: Approval
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        await self._deliver(target, kind, approval)

    async def _deliver(self, target: WebhookTarget, kind: str, approval: Approval) -> None:
        body = notification_body(kind, approval, target.format)
        error = "not sent"
        for attempt in range(self.tries):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = await self._http().post(target.url, json=body)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
                continue
            if 200 <= response.status_code < 300:
                return
            error = f"HTTP {response.status_code}"
        log.warning(
            "approval notification to %s failed after %d tries: %s",
            redact_url(target.url),
            self.tries,
            error,
        )
        if self.store is None:
            return
        try:
            await self.store.append(
                "notification_failed",
                session=approval.session,
                identity=approval.identity,
                connection=approval.connection,
                rule=approval.rule,
                meta={
                    "approval_id": approval.id,
                    "notification": kind,
                    "target": redact_url(target.url),
                    "format": target.format,
                    "tries": self.tries,
                    "error": error,
                },
            )
        except Exception:  # the store's own failure is reported by the store
            log.exception("could not record a failed approval notification")
