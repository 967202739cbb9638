"""A recorded session as a timeline, for `wardgate replay`.

Reads a session's events in log order, joins each `command` with its `result`, and
loads the stored payloads (statement text and parameters, rows as recorded: masked,
and cut at the byte budget). A purged payload shows as purged. Items stream: memory
holds the commands still waiting for their result, not the session.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wardgate.termtext import shown

__all__ = ["Timeline", "load_timeline", "render_timeline"]


@dataclass
class Timeline:
    """A session's header and its items.

    `items` is any iterable: `load_timeline` gives a generator that reads the store as
    it is consumed (bounded memory for a session of any length); `list()` it to keep it.
    """

    session: str
    identity: str | None
    connection: str | None
    start: str | None
    items: Iterable[dict[str, Any]] = field(default_factory=list)


# Commands wait in order for their result, so that each is shown with its outcome.
# More commands waiting than this (a deep pipeline, or a command whose result never
# came) let the oldest go out without it; its result then shows as an item of its own.
_MAX_PENDING = 1000


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _rows(payload: bytes | None, limit: int | None) -> tuple[list[str] | None, list[Any]]:
    if payload is None:
        return None, []
    # one JSON document per line, split at "\n" only: str.splitlines() also splits at
    # U+2028, NEL and FS, which a row value may hold raw (the record keeps non-ASCII as is)
    lines = payload.decode("utf-8", "replace").split("\n")
    if not lines:
        return None, []
    columns = json.loads(lines[0]).get("columns")
    body = [line for line in lines[1:] if line]
    if limit is not None:
        body = body[:limit]
    return columns, [json.loads(line) for line in body]


def _resolve_session(store: Any, prefix: str) -> str | None:
    """The one session whose id starts with `prefix` (a full id included), or None.

    Sessions are found by their session_start (a range read of its index). A store whose
    events carry no session_start at all (written by hand, not by a gateway, which
    records it before anything else of the session) is searched by full id only."""
    ids = store.session_ids(prefix, limit=2)
    if ids:
        return ids[0] if len(ids) == 1 or ids[0] == prefix else None
    if store.session_ids(limit=1):
        return None  # a gateway's store: no such session
    if next(iter(store.events(session=prefix, limit=1)), None) is not None:
        return prefix  # only a full id there
    return None


def load_timeline(
    store: Any, session_prefix: str, *, max_rows: int | None = None
) -> Timeline | None:
    """The session's timeline; its items are read lazily while the store is open.

    `max_rows` caps the rows loaded per statement (None: every stored row).
    """
    session_id = _resolve_session(store, session_prefix)
    if session_id is None:
        return None
    events = iter(store.events(session=session_id))
    first = next(events, None)
    if first is None:
        return None
    timeline = Timeline(session_id, first.identity, first.connection, first.time)
    timeline.items = _items(store, first, events, max_rows)
    return timeline


def _items(
    store: Any, first: Any, rest: Iterator[Any], max_rows: int | None
) -> Iterator[dict[str, Any]]:
    t0 = _ts(first.time)
    pending: deque[dict[str, Any]] = deque()  # in log order; commands wait for a result
    commands: dict[int, dict[str, Any]] = {}

    def ready() -> Iterator[dict[str, Any]]:
        while pending and (
            pending[0]["kind"] != "command"
            or "result" in pending[0]
            or len(commands) > _MAX_PENDING
            or len(pending) > 4 * _MAX_PENDING
        ):
            item = pending.popleft()
            commands.pop(item["seq"], None)
            yield item

    for ev in itertools.chain((first,), rest):
        offset = round((_ts(ev.time) - t0).total_seconds(), 6)
        item: dict[str, Any] = {"seq": ev.seq, "offset": offset, "kind": ev.kind, "time": ev.time}
        if ev.kind == "command":
            body = store.payload(ev.payload_hash) if ev.payload_hash else None
            if body is None and ev.payload_hash:
                item["text"], item["parameters"] = "<payload purged>", []
            else:
                data = json.loads(body) if body else {}
                item["text"], item["parameters"] = data.get("text"), data.get("parameters", [])
            item.update(verdict=ev.verdict, rule=ev.rule, reason=ev.meta.get("reason"))
            for key in ("approval_id", "approved_by", "justification"):
                if key in ev.meta:
                    item[key] = ev.meta[key]
            commands[ev.seq] = item
            pending.append(item)
        elif ev.kind == "result":
            parent = commands.get(ev.meta.get("command_seq"))
            payload = store.payload(ev.payload_hash) if ev.payload_hash else None
            columns, rows = _rows(payload, max_rows)
            outcome = {
                "tag": ev.meta.get("tag"),
                "rows": ev.meta.get("rows")
                if ev.meta.get("rows") is not None
                else ev.meta.get("rows_streamed"),
                "error": ev.meta.get("error"),
                "stored_rows": ev.meta.get("stored_rows"),
                "truncated": ev.meta.get("truncated"),
                "masking": ev.meta.get("masking"),
                "columns": columns,
                "row_values": rows,
            }
            if parent is not None:
                parent["result"] = outcome
            else:
                item.update(outcome)
                pending.append(item)
        else:
            item["meta"] = ev.meta
            if ev.verdict:
                item["verdict"] = ev.verdict
            pending.append(item)
        yield from ready()
    yield from pending


def _masking_line(masking: dict | None) -> str:
    """`email: EMAIL_ADDRESS x4; ssn: column rule x4 (baseline/mask-pii, shop/mask-ssn)`"""
    if not masking:
        return ""
    parts = []
    for column, found in sorted((masking.get("columns") or {}).items()):
        if found:
            parts.append(f"{column}: " + ", ".join(f"{e} x{n}" for e, n in sorted(found.items())))
    for column, info in sorted((masking.get("column_rules") or {}).items()):
        if isinstance(info, dict):
            parts.append(
                f"{column}: column rule {info.get('strategy', '')} x{info.get('values', '?')}"
            )
        elif info:
            parts.append(f"{column}: column rule x{info}")
    for column, n in sorted((masking.get("nulled") or {}).items()):
        if n:
            parts.append(f"{column}: sent as NULL x{n}")
    if not parts:
        return ""
    rules = sorted({r.get("rule", "") for r in masking.get("rules") or [] if isinstance(r, dict)})
    return "; ".join(parts) + (f"  ({', '.join(rules)})" if rules else "")


def _t(value: object, *, newlines: bool = False) -> str:
    """A recorded value as rich markup that prints it literally: agents choose statements,
    values, names and messages, so neither a terminal control sequence (termtext.py) nor
    rich markup (`[/]`, `[black on black]`) in them may act on the reviewer's screen."""
    return escape(shown(value, newlines=newlines))


def _text_block(value: object) -> str:
    """A multi-line statement keeps its lines, each continued under the text column, so
    no line of it can pass for a timeline entry of its own."""
    return _t(value, newlines=True).replace("\n", "\n" + " " * 21)


def render_timeline(console: Console, timeline: Timeline, *, max_rows: int = 20) -> None:
    console.print(
        f"[bold]session[/bold] {_t(timeline.session)}  identity [cyan]{_t(timeline.identity)}"
        f"[/cyan]  connection [cyan]{_t(timeline.connection)}[/cyan]  started "
        f"{_t(timeline.start)}",
        highlight=False,
    )
    colors = {"allow": "green", "deny": "red", "review": "yellow"}
    for item in timeline.items:
        stamp = f"+{item['offset']:9.3f}s"
        if item["kind"] != "command":
            meta = item.get("meta") or {}
            detail = ", ".join(f"{k}={v}" for k, v in meta.items() if v not in (None, "", [], {}))
            console.print(f"[dim]{stamp}  {_t(item['kind'])}  {_t(detail)}[/dim]", highlight=False)
            continue
        verdict = item.get("verdict") or ""
        color = colors.get(verdict, "white")
        console.print(
            f"{stamp}  [{color}]{_t(verdict):6}[/{color}]  {_text_block(item.get('text'))}",
            highlight=False,
        )
        if item.get("parameters"):
            console.print(f"{'':13}parameters: {_t(item['parameters'])}", highlight=False)
        if verdict != "allow" and item.get("rule"):
            console.print(
                f"{'':13}rule {_t(item['rule'])}: {_t(item.get('reason') or '')}",
                highlight=False,
            )
        if item.get("approval_id"):
            by = ", ".join(item.get("approved_by") or [])
            console.print(f"{'':13}approval {_t(item['approval_id'])} by {_t(by)}", highlight=False)
        result = item.get("result")
        if not result:
            continue
        if result.get("error"):
            e = result["error"]
            console.print(
                f"{'':13}[red]error {_t(e.get('sqlstate') or '')}: {_t(e.get('message'))}[/red]",
                highlight=False,
            )
        else:
            console.print(
                f"{'':13}-> {_t(result.get('tag'))}  rows {_t(result.get('rows'))}",
                highlight=False,
            )
        summary = _masking_line(result.get("masking"))
        if summary:
            console.print(f"{'':13}[magenta]masked[/magenta] {_t(summary)}", highlight=False)
        rows = result.get("row_values") or []
        if rows and result.get("columns"):
            table = Table(show_header=True, header_style="dim", box=None, padding=(0, 1))
            for col in result["columns"]:
                table.add_column(Text(shown(col)))
            for row in rows[:max_rows]:
                if isinstance(row, list):
                    table.add_row(*[Text("NULL" if v is None else shown(v)) for v in row])
            console.print(table)
            extra = (result.get("rows") or 0) - min(len(rows), max_rows)
            if extra > 0:
                note = (
                    " (beyond the record budget: counted and digested)"
                    if result.get("truncated")
                    else ""
                )
                console.print(f"{'':13}[dim]... {extra} more rows{note}[/dim]", highlight=False)
