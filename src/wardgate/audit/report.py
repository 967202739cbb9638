"""The readable report of an evidence bundle, in Markdown and HTML, from the bundle's data.

Theory of operation: `build_report` turns the selected events (decoded canonical bodies),
their payloads and the included checkpoints into a list of blocks (headings, paragraphs,
tables); `render_markdown` and `render_html` print the same blocks. The report is a pure,
deterministic function of what is in the bundle (no clock, no store), so `evidence
verify` regenerates it from the verified data and requires it to equal the bundled copy
byte for byte: the readable report cannot say anything the evidence does not.

Sections and the SOC 2 (2017 Trust Services Criteria) points they support: sessions by
identity and connection (CC6.1, CC7.2), authentication failures (CC6.1, CC7.2), denied
statements (CC6.6, CC7.2), approvals (CC8.1), masking (CC6.1), integrity (CC7.2). The
report supports an auditor's testing; it is not an attestation and claims no certification.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wardgate.termtext import shown

__all__ = ["Block", "SOC2_MAPPING", "build_report", "render_markdown", "render_html"]

MAX_ROWS = 1000  # per detail table; the rest stay in events.jsonl
_TEXT_CHARS = 300

SOC2_MAPPING: tuple[tuple[str, str, str], ...] = (
    ("Sessions by identity and connection", "CC6.1, CC7.2",
     "which identities reached which targets, when, and how many statements they ran"),
    ("Authentication failures", "CC6.1, CC7.2",
     "access attempts refused before any statement ran"),
    ("Denied statements", "CC6.6, CC7.2",
     "statements blocked at the gateway by a named policy rule"),
    ("Approvals", "CC8.1",
     "risky statements held until named reviewers approved or denied them, with reasons"),
    ("Masking", "CC6.1",
     "sensitive values masked in results, by connection, column and entity type"),
    ("Integrity", "CC7.2",
     "signed checkpoints and proofs showing the recorded events were not altered"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Block:
    """One element of the report: ("h1"|"h2"|"p", text) or ("table", headers, rows)."""

    kind: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def _auth_reason(m: dict) -> str:
    """A failed-login block (auth_failure_limit) is two events: say which, and for its
    end how many attempts it refused, so the attack's size is in the report."""
    reason = _s(m.get("reason"))
    if m.get("block") == "started":
        return f"{reason}: blocked until {_s(m.get('until'))} after {_s(m.get('failures'))}"
    if m.get("block") == "ended":
        return (
            f"{reason}: block ended, {_s(m.get('refused'))} attempts refused "
            f"({_s(m.get('first_refused'))} to {_s(m.get('last_refused'))})"
        )
    return reason


def _s(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _statement(ev: Mapping[str, Any], payloads: Mapping[str, bytes | None]) -> str:
    ph = ev.get("payload_hash")
    if ph is None:
        return "-"
    data = payloads.get(ph)
    if data is None:
        return "(payload purged)"
    try:
        text = str(json.loads(data).get("text", ""))
    except (ValueError, AttributeError):
        text = data.decode("utf-8", "replace")
    return text if len(text) <= _TEXT_CHARS else text[:_TEXT_CHARS] + "..."


def _capped(rows: list[tuple[str, ...]], what: str) -> tuple[list[tuple[str, ...]], list[Block]]:
    if len(rows) <= MAX_ROWS:
        return rows, []
    note = Block("p", f"First {MAX_ROWS} of {len(rows)} {what} shown; all are in events.jsonl.")
    return rows[:MAX_ROWS], [note]


def _table(headers: Sequence[str], rows: list[tuple[str, ...]], what: str) -> list[Block]:
    if not rows:
        return [Block("p", f"No {what} in this selection.")]
    shown, note = _capped(rows, what)
    return [Block("table", headers=tuple(headers), rows=tuple(shown)), *note]


def build_report(
    manifest: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    payloads: Mapping[str, bytes | None],
    checkpoints: Sequence[Mapping[str, Any]],
    keys: Sequence[Mapping[str, Any]],
) -> list[Block]:
    """The report's blocks; every input comes from the bundle itself."""
    out: list[Block] = [Block("h1", f"wardgate evidence report: {manifest['origin']}")]
    filters = {k: v for k, v in manifest["filters"].items() if v is not None}
    scope = ", ".join(f"{k}={v}" for k, v in sorted(filters.items())) or "none (every event)"
    times = [e["time"] for e in events]
    out.append(Block("p", (
        f"Selection: {scope}. {len(events)} events"
        + (f", seq {events[0]['seq']} to {events[-1]['seq']}, time {min(times)} to "
           f"{max(times)}" if events else "")
        + f". Every event is proven included in the signed checkpoint of tree size "
        f"{manifest['tree_size']}. Check this bundle offline with "
        "`wardgate evidence verify BUNDLE.zip --key PUBLIC-KEY-FILE`."
    )))  # fmt: skip
    out.append(Block("p", (
        "This report supports an auditor's evaluation of the controls named below. It is "
        "not a SOC 2 report or attestation, and neither wardgate nor this bundle claims any "
        "certification."
    )))  # fmt: skip

    # -- sessions by identity and connection --------------------------------------------
    out.append(Block("h2", "Sessions by identity and connection (supports CC6.1, CC7.2)"))
    agg: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    span: dict[tuple[str, str], list[str]] = {}
    sessions: dict[str, dict[str, Any]] = {}
    for e in events:
        key = (_s(e["identity"]), _s(e["connection"]))
        if e["kind"] == "session_start":
            agg[key]["sessions"] += 1
            sessions[e["session"] or "-"] = {"start": e, "end": None}
        elif e["kind"] == "command":
            agg[key]["statements"] += 1
            agg[key][str(e["verdict"])] += 1
        elif e["kind"] == "session_end" and (e["session"] or "-") in sessions:
            sessions[e["session"] or "-"]["end"] = e
        else:
            continue
        lo_hi = span.setdefault(key, [e["time"], e["time"]])
        lo_hi[1] = e["time"]
    rows = [
        (i, c, str(n["sessions"]), str(n["statements"]), str(n["allow"]), str(n["deny"]),
         str(n["review"]), span[(i, c)][0], span[(i, c)][1])
        for (i, c), n in sorted(agg.items())
    ]  # fmt: skip
    out += _table(("identity", "connection", "sessions", "statements", "allowed", "denied",
                   "held for review", "first", "last"), rows, "sessions or statements")  # fmt: skip
    srows = []
    for sid, s in sessions.items():
        st, end = s["start"], s["end"]
        m = st["meta"]
        srows.append((sid, _s(st["identity"]), _s(st["connection"]), _s(m.get("client_addr")),
                      _s(m.get("application_name")), st["time"], end["time"] if end else "-",
                      _s(end["meta"].get("statements")) if end else "-",
                      _s(end["meta"].get("reason")) if end else "-"))  # fmt: skip
    if srows:
        out += _table(("session", "identity", "connection", "client", "application", "started",
                       "ended", "statements", "end reason"), srows, "sessions")  # fmt: skip

    # -- authentication failures ------------------------------------------------------
    out.append(Block("h2", "Authentication failures (supports CC6.1, CC7.2)"))
    rows = [
        (e["time"], str(e["seq"]), _s(e["identity"]), _s(e["connection"]),
         _s(e["meta"].get("client_addr")), _auth_reason(e["meta"]))
        for e in events if e["kind"] == "auth_failure"
    ]  # fmt: skip
    out += _table(("time", "seq", "identity claimed", "connection", "client", "reason"), rows,
                  "authentication failures")  # fmt: skip

    # -- denied statements --------------------------------------------------------------
    out.append(Block("h2", "Denied statements (supports CC6.6, CC7.2)"))
    rows = [
        (e["time"], str(e["seq"]), _s(e["identity"]), _s(e["connection"]), _s(e["rule"]),
         _s(e["meta"].get("reason")), _statement(e, payloads))
        for e in events if e["kind"] == "command" and e["verdict"] == "deny"
    ]  # fmt: skip
    out += _table(("time", "seq", "identity", "connection", "rule", "reason", "statement"),
                  rows, "denied statements")  # fmt: skip

    # -- approvals --------------------------------------------------------------------------
    out.append(Block("h2", "Approvals (supports CC8.1)"))
    rows = []
    for e in events:
        kind = e["kind"]
        if not kind.startswith("approval_"):
            continue
        m = e["meta"]
        if kind == "approval_requested":
            who, what, why = _s(e["identity"]), "requested", _s(m.get("reason"))
            detail = _s(m.get("statement"))
            if len(detail) > _TEXT_CHARS:
                detail = detail[:_TEXT_CHARS] + "..."
        elif kind == "approval_decided":
            who, what, why = _s(m.get("reviewer")), _s(m.get("decision")), _s(m.get("reason"))
            detail = f"decided at {_s(m.get('time'))}"
        elif kind == "approval_grant":
            who, what, why = ", ".join(map(str, m.get("granted_by") or [])) or "-", "grant", "-"
            detail = f"until {_s(m.get('until'))}"
        elif kind == "approval_expired":
            who, what, why = "-", "expired", f"waited {_s(m.get('waited_seconds'))} s"
            detail = "-"
        elif kind == "approval_abandoned":
            who, what, why, detail = "-", "abandoned", _s(m.get("reason")), "-"
        else:
            who, what, why, detail = "-", kind.removeprefix("approval_"), "-", "-"
        rows.append((_s(m.get("approval_id")), e["time"], str(e["seq"]), what, who,
                     _s(e["connection"]), why, detail))  # fmt: skip
    out += _table(("approval", "time", "seq", "event", "identity / reviewer", "connection",
                   "reason", "detail"), rows, "approval events")  # fmt: skip

    # -- masking ------------------------------------------------------------------------
    out.append(Block("h2", "Masking (supports CC6.1)"))
    masked: dict[tuple[str, str, str], int] = Counter()
    for e in events:
        if e["kind"] != "result":
            continue
        mk = e["meta"].get("masking")
        if not isinstance(mk, dict):
            continue
        for column, entities in mk.items():
            if isinstance(entities, dict):
                for entity, n in entities.items():
                    if isinstance(n, int):
                        masked[(_s(e["connection"]), str(column), str(entity))] += n
    rows = [(c, col, ent, str(n)) for (c, col, ent), n in sorted(masked.items())]
    out += _table(("connection", "column", "entity type", "values masked"), rows,
                  "masked values")  # fmt: skip

    # -- integrity ----------------------------------------------------------------------
    out.append(Block("h2", "Integrity (supports CC7.2)"))
    out.append(Block("p", (
        "Each checkpoint is a C2SP signed note over (origin, tree size, root). Every selected "
        "event has an RFC 9162 inclusion proof to the last checkpoint; each checkpoint has a "
        "consistency proof to the next, so an earlier published checkpoint is a prefix of it."
    )))  # fmt: skip
    rows = [(str(c["size"]), c["root"], c["created"], c["key_id"]) for c in checkpoints]
    out += _table(("tree size", "root (base64)", "signed at", "key id"), rows, "checkpoints")
    rows = [(k["vkey"], _s(k["not_before"]), _s(k["not_after"])) for k in keys]
    out += _table(("verifier key", "valid from", "valid until"), rows, "keys")

    # -- SOC 2 mapping ------------------------------------------------------------------
    out.append(Block("h2", "SOC 2 criteria each section supports"))
    out += _table(("section", "criteria", "what it shows"), list(SOC2_MAPPING), "sections")
    out.append(Block("p", (
        "CC6.1 logical access security; CC6.6 protection against threats from outside the "
        "system boundary; CC7.2 monitoring of system components for anomalies; CC8.1 "
        "authorisation and approval of changes. The mapping shows which evidence bears on "
        "which criterion; whether a control meets a criterion is the auditor's judgement."
    )))  # fmt: skip
    return out


def _md_cell(s: str, legacy: bool = False) -> str:
    s = s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return s if legacy else shown(s)


def render_markdown(blocks: Sequence[Block], *, legacy: bool = False) -> str:
    """The report in Markdown. Cells hold what agents sent (statements, names, reasons):
    control, format and invisible characters are written as visible escapes (termtext),
    so neither a terminal (`cat report.md`) nor a viewer obeys them. `legacy`: as
    versions before that wrote it, so their bundles still verify."""
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}\n")
        elif b.kind == "h2":
            out.append(f"## {b.text}\n")
        elif b.kind == "p":
            out.append(f"{b.text}\n")
        else:
            lines = ["| " + " | ".join(b.headers) + " |", "|" + "---|" * len(b.headers)]
            lines += ["| " + " | ".join(_md_cell(c, legacy) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


_CSS = (
    "body{font-family:sans-serif;max-width:80em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.2em .5em;"
    "vertical-align:top;font-size:90%}th{background:#eee}code{font-size:90%}"
)


def render_html(blocks: Sequence[Block], *, legacy: bool = False) -> str:
    """The report in HTML; cells as in `render_markdown` (a bidi override would reorder a
    statement in a browser: it is shown as `\\u202e`)."""

    def esc(text: str) -> str:
        return html.escape(text if legacy else shown(text.replace("\r", " "), newlines=True))

    title = next((b.text for b in blocks if b.kind == "h1"), "wardgate evidence report")
    out = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}'
           f"</title><style>{_CSS}</style></head><body>"]  # fmt: skip
    for b in blocks:
        if b.kind in ("h1", "h2", "p"):
            out.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        else:
            head = "".join(f"<th>{esc(h)}</th>" for h in b.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    out.append("</body></html>\n")
    return "\n".join(out)
