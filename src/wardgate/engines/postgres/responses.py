"""The response side of the PostgreSQL relay: target messages back to the agent.

Responses are matched to requests through `ops`, a FIFO of what each forwarded message
will produce (the way pgproto and Teleport track the extended protocol). DataRows pass as
raw slices unless a masker applies; each statement's rows are recorded within a byte
budget by a `ResultRecorder`. A statement's `result` event is handed to the store with
the next command event (at most `RESULT_DELAY` later, and always before session_end):
the two then share one group commit, and a session of short statements pays one
durable write per statement, not two. Only the command event gates forwarding. With the
writer process the store does that holding back itself, for every session at once
(`Gateway.results_wait_in_store`): the result event is handed over when the statement
ends. Once
that budget is spent and no masker applies to the result (no column can hold a value to
mask), the rest of each run of DataRows in the buffer is forwarded, counted and digested
as one slice (`MessageReader.next_run`).

Result plans (column names, the masker) are reused for the same decision, RowDescription
and formats while the catalog map is the same object, and only when no masker applies
(`_prepare_result`). `ResponseSide` is a mixin of `PgRelay`: the state it uses is the
relay's. The per-statement records both sides share (a prepared statement, a portal, an
execution, a plan, a forwarded message's FIFO entry) are defined here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wardgate.engines.postgres.results import ResultRecorder, columns_head, rows_from_tag
from wardgate.pipeline.command import Command, Decision, SessionInfo
from wardgate.policy.facts import is_on, is_utf8_name
from wardgate.wire.pg import backend as be
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.framing import MessageReader, ProtocolError

if TYPE_CHECKING:
    from wardgate.pipeline.gateway import Gateway

__all__ = [
    "ResponseSide",
    "TargetSide",
    "RESULT_DELAY",
    "Statement",
    "Portal",
    "Execution",
    "Plan",
    "Op",
]

log = logging.getLogger("wardgate.postgres")

_ROW, _ROWDESC, _CMD, _ERR, _RFQ, _NOTICE, _NOTIFY = (ord(c) for c in "DTCEZNA")
# strict masking: what the agent is told when a row could not be masked (none is sent)
MASKING_WITHHELD = "wardgate: masking failed on a row; the rest of the result was withheld"
_PARSE_OK, _BIND_OK, _CLOSE_OK, _NODATA, _PARAMDESC, _EMPTY, _SUSPENDED = (
    ord(c) for c in "123nt" + "Is"
)
_COPY_IN, _COPY_OUT, _COPY_BOTH = ord("G"), ord("H"), ord("W")
_COPY_DATA, _COPY_DONE = ord("d"), ord("c")
_PARAMSTATUS = ord("S")

# how long a finished statement's result event may wait for the next command event
RESULT_DELAY = 0.005
_PLANS_MAX = 256


@dataclass(slots=True)
class Statement:
    text: str
    decisions: list[tuple[Command, Decision]]
    fields: list[Any] | None = None
    extra: dict | None = None  # evidence carried to each execution (an approval)
    # a statement whose verdict is review: executions an approval still covers (0: each
    # Execute is held with its bound parameters; a grant answers at once). None: the
    # statement needs no approval.
    approved_runs: int | None = None
    param_types: tuple[int, ...] = ()  # the OIDs Parse declared (0: left to the server)


@dataclass(slots=True)
class Portal:
    statement: Statement | None
    params: tuple[str | None, ...]
    result_formats: tuple[int, ...]
    fields: list[Any] | None = None
    generation: int = 0  # Syncs and Queries forwarded before its Bind (see PgRelay._syncs)
    described: bool = False  # the agent sent a Describe of it: its answer brings the fields


@dataclass(slots=True)
class Execution:
    """One statement execution whose response is being recorded."""

    text: str
    decision: Decision | None
    seq_future: Any = None  # concurrent.futures.Future[EventRecord]
    recorder: ResultRecorder | None = None
    masker: Any = None
    portal: Portal | None = None
    done: bool = False
    prepared: bool = False  # column info known and masker chosen
    # rows that cannot be masked (a masking failure, binary COPY...) are withheld and the
    # statement ends with this error instead of its CommandComplete
    withheld: str | None = None


@dataclass(slots=True)
class Plan:
    """A result plan with no masker: what preparing the same result again gives."""

    decision: Decision | None
    fields: list[Any]
    catalog: Any  # the catalog map it was made with
    names: list[str]
    head: bytes  # the recorded payload's first line


@dataclass(slots=True)
class Op:
    """What one forwarded message will produce in the response stream."""

    kind: str  # parse bind describe execute close sync query inject local flush
    execs: list[Execution] = field(default_factory=list)
    index: int = 0
    # describe: (kind, name); parse/bind/close: undo records (see ResponseSide._undo);
    # sync/query: its number (PgRelay._syncs); inject: error bytes; local: callable
    payload: Any = None


class _SessionClosed(Exception):
    """The session was closed while handling a target message: stop at once."""


class TargetSide(asyncio.Protocol):
    """The target connection's Protocol: feeds `PgRelay.target_data`."""

    def __init__(self, relay: Any) -> None:
        self.relay = relay

    def data_received(self, data: bytes) -> None:
        self.relay.target_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.target_lost(exc)

    def pause_writing(self) -> None:
        # the target does not read what it was sent: stop reading the agent
        self.relay.target_full = True
        self.relay.agent_t.pause_reading()

    def resume_writing(self) -> None:
        self.relay.target_full = False
        self.relay.unblocked()


def _withhold(ex: Execution | None, exc: Exception) -> None:
    """Masking failed: this row and the rest of the result are not sent; the statement
    ends with an error instead (logged by type only: a message could quote a value)."""
    log.error("masking failed: %s", type(exc).__name__)
    if ex is not None:
        ex.withheld = MASKING_WITHHELD


class ResponseSide:
    """Target -> agent handling of `PgRelay` (see the module docstring)."""

    # the relay's state this side reads and writes
    gw: Gateway
    info: SessionInfo
    loop: asyncio.AbstractEventLoop
    agent_t: asyncio.Transport
    from_target: MessageReader
    ops: deque[Op]
    statements: dict[str, Any]
    portals: dict[str, Any]
    tx_status: str
    closed: bool
    _passthrough: ResultRecorder | None
    _pass_masker: Any
    _results: list[tuple[Execution, str | None, dict | None]]
    _results_timer: asyncio.TimerHandle | None
    _results_since: float  # loop time of the oldest result in _results
    _rowdescs: dict[bytes, list[Any]]
    _plans: dict[tuple, Plan]
    _column_heads: dict[int, tuple[list[Any], list[str], bytes]]
    _capped: bool

    def close(self, reason: str, *, fatal: bytes | None = None) -> None:
        raise NotImplementedError

    def unblocked(self) -> None:
        raise NotImplementedError

    def target_data(self, data: bytes) -> None:
        if self.closed:
            return
        reader = self.from_target
        reader.feed(data)
        out: list[bytes] = []
        try:
            while (msg := reader.next_message()) is not None:
                self._target_message(msg[0], msg[1], msg[2], out)
                if self._passthrough is not None:
                    # the rest of this run of DataRows passes as one slice: unchanged, or
                    # masked in one call (the C row masker) when a masker applies
                    run = reader.next_run(_ROW)
                    if run is not None:
                        self._pass_run(run[0], run[1], out)
                    self._passthrough = None
        except _SessionClosed:
            return
        except ProtocolError as exc:
            self.close(
                f"target protocol error: {exc}",
                fatal=w.error_response(
                    "FATAL", "08P01", "wardgate: protocol error from the target"
                ),
            )
            return
        except Exception:  # fail closed: never pass what we could not process
            log.exception("response processing failed")
            self.close(
                "response processing failed",
                fatal=w.error_response(
                    "FATAL",
                    "XX000",
                    "wardgate: could not process the response; the session was closed",
                ),
            )
            return
        if out:
            self.agent_t.write(b"".join(out))
        if self._capped:  # reading stopped at the in-flight limit: answers came
            self.unblocked()

    def _pass_run(self, data: bytes, count: int, out: list[bytes]) -> None:
        rec = self._passthrough
        assert rec is not None
        masker = self._pass_masker
        if masker is not None:
            try:
                data = masker.mask_data_rows(data)
            except Exception as exc:  # strict: no row of a run that cannot be masked
                _withhold(self._current(), exc)
                return
        out.append(data)
        rec.add_rows(data, count)

    def _current(self) -> Execution | None:
        if not self.ops:
            return None
        op = self.ops[0]
        if op.kind == "query":
            return op.execs[op.index] if op.index < len(op.execs) else None
        if op.kind == "execute":
            return op.execs[0]
        return None

    def _target_message(self, t: int, body: bytes, raw: bytes, out: list[bytes]) -> None:
        if t == _ROW:
            ex = self._current()
            if ex is not None and not ex.prepared:
                self._late_prepare(ex)
            if ex is not None and ex.withheld:
                return
            if ex is not None and ex.prepared:
                masker = ex.masker
                if masker is not None:
                    try:
                        masked = masker.mask_data_row(body)
                    except Exception as exc:  # strict: a row that cannot be masked is not sent
                        _withhold(ex, exc)
                        return
                    if masked is not body and masked != body:
                        body = masked
                        raw = b"D" + (len(body) + 4).to_bytes(4, "big") + body
                rec = ex.recorder
                if rec is not None:
                    rec.add_row(raw, body)
                    if rec.truncated and (masker is None or masker.batches):
                        self._passthrough = rec
                        self._pass_masker = masker
            else:
                # rows nobody planned for (no RowDescription seen; the relay describes
                # every portal it executes, so this should not happen). Column rules
                # cannot be matched without columns: withheld (fail closed); otherwise
                # the baseline entity scan
                if ex is not None and any(
                    getattr(m, "columns", ()) for m in (ex.decision.masks if ex.decision else ())
                ):
                    log.error("rows without a row description under column rules: withheld")
                    ex.withheld = MASKING_WITHHELD
                    return
                masked = self.gw.mask_unplanned_row(body)
                if masked is not body:
                    raw = b"D" + (len(masked) + 4).to_bytes(4, "big") + masked
            out.append(raw)
            return
        ops = self.ops
        op = ops[0] if ops else None
        if t == _CMD or t == _EMPTY or t == _SUSPENDED:
            ex = self._current()
            tag = be.command_tag(body) if t == _CMD else ("" if t == _EMPTY else "(suspended)")
            if ex is not None and ex.withheld:
                raw = w.error_response("ERROR", "42501", ex.withheld)
                self._finish(ex, error={"sqlstate": "42501", "message": ex.withheld})
            elif ex is not None:
                self._finish(ex, tag=tag)
                if ex.decision is not None and (ex.decision.facts or {}).get("forgets_prepared"):
                    # a DO block or function that may have run PREPARE / DEALLOCATE
                    self._forget_deallocated("*")
                elif tag.startswith("DEALLOCATE") and ex.decision is not None:
                    self._forget_deallocated(ex.decision.facts.get("deallocates"))
                elif tag == "DISCARD ALL":
                    self._forget_deallocated("*")
                    self.portals = {}
                elif tag.startswith(("DECLARE", "CLOSE")) and ex.decision is not None:
                    # the name is a SQL cursor now (DECLARE succeeds only for a free
                    # name), or no portal at all: a protocol portal the relay still
                    # held under it is stale
                    facts = ex.decision.facts or {}
                    name = facts.get("declares") or facts.get("closes_cursor")
                    if name == "*":
                        self.portals = {}
                    elif name:
                        self.portals.pop(name, None)
            if op is not None:
                if op.kind == "query":
                    op.index += 1
                elif op.kind == "execute":
                    ops.popleft()
            out.append(raw)
        elif t == _ROWDESC:
            fields = self._fields(body)
            if op is not None:
                if op.kind == "describe_cursor":  # the relay's own Describe: not forwarded
                    op.payload.fields = fields
                    ops.popleft()
                    return
                if op.kind == "describe":
                    kind, name = op.payload
                    target = self.statements.get(name) if kind == "S" else self.portals.get(name)
                    if target is not None:
                        target.fields = fields
                    ops.popleft()
                elif op.kind == "query":
                    ex = self._current()
                    if ex is not None:
                        self._prepare_result(ex, fields, ())
            out.append(raw)
        elif t == _RFQ:
            self.tx_status = chr(body[0]) if body else "I"
            # a Sync or Query (or an injected refusal) ends here; anything left was skipped
            while ops:
                head = ops.popleft()
                if head.kind in ("sync", "query", "inject_done"):
                    for ex in head.execs[head.index :]:
                        if not ex.done:
                            self._finish(ex, error={"sqlstate": None, "message": "not run"})
                    if self.tx_status == "I" and head.payload is not None:
                        self._forget_portals(head.payload)
                    break
            out.append(raw)
            self._drain_local(out)
        elif t == _ERR:
            if op is not None and op.kind == "inject":
                ops.popleft()
                out.append(op.payload)
                # the simple protocol (index=1) answers ReadyForQuery next; the extended
                # one skips to the Sync already queued behind it
                if op.index == 1:
                    ops.appendleft(Op("inject_done"))
                return
            ex = self._current()
            # masked once: the agent and the record get the same texts
            masked_raw, fields = self.gw.masked_error(
                raw, body, decision=ex.decision if ex is not None else None
            )
            error = {"sqlstate": fields.get("C"), "message": fields.get("M", "")}
            if ex is not None:
                self._finish(ex, error=error)
                if ex.decision is not None and (ex.decision.facts or {}).get("forgets_prepared"):
                    self._forget_deallocated("*")  # DEALLOCATE does not roll back
            if op is not None and op.kind == "query":
                op.index += 1
            elif op is not None and op.kind not in ("sync",):
                # extended protocol: the target skips to Sync
                skipped = []
                while ops and ops[0].kind not in ("sync", "query"):
                    dropped = ops.popleft()
                    skipped.append(dropped)
                    for dx in dropped.execs:
                        if not dx.done:
                            self._finish(dx, error={"sqlstate": None, "message": "not run"})
                # the target made, bound or closed none of these: their names mean what
                # they meant before
                self._undo(skipped)
            out.append(masked_raw)
        elif t == _PARSE_OK or t == _BIND_OK or t == _CLOSE_OK or t == _NODATA:
            if op is not None and op.kind == "describe_cursor" and t == _NODATA:
                ops.popleft()  # the relay's own Describe: not forwarded
                return
            if op is not None and op.kind in ("parse", "bind", "close", "describe"):
                ops.popleft()
            out.append(raw)
        elif t == _PARAMDESC:
            # the server's types for a described statement: how later binary Bind values
            # are read for the record (asyncpg declares none in Parse)
            if op is not None and op.kind == "describe" and op.payload[0] == "S":
                stmt = self.statements.get(op.payload[1])
                if stmt is not None:
                    stmt.param_types = be.decode_parameter_description(body).type_oids
            out.append(raw)
        elif t == _PARAMSTATUS:
            status = be.decode_parameter_status(body)
            if (status.name == "client_encoding" and not is_utf8_name(status.value)) or (
                status.name == "standard_conforming_strings" and not is_on(status.value)
            ):
                # defence in depth: statements are read as UTF-8 by the gateway
                self.close(
                    f"{status.name} changed",
                    fatal=w.error_response(
                        "FATAL",
                        "0A000",
                        f"wardgate: {status.name} changed to {status.value!r}; session closed",
                    ),
                )
                raise _SessionClosed
            out.append(raw)
        elif t == _NOTICE:
            # a notice raised while a statement runs (a function's RAISE NOTICE) is
            # masked as that statement's error would be
            ex = self._current()
            out.append(
                self.gw.mask_error(
                    raw, body, notice=True, decision=ex.decision if ex is not None else None
                )
            )
        elif t == _NOTIFY:
            out.append(self.gw.mask_notification(raw, body))
        elif t == _COPY_OUT:
            ex = self._current()
            fmt = be.decode_copy_out_response(body).format
            refusal = self.gw.copy_refusal(ex.decision if ex else None, binary=fmt == 1)
            if refusal is not None and ex is not None:
                # the rows cannot be masked: withhold them and end the COPY with an error,
                # as PostgreSQL ends a COPY that fails part way
                ex.withheld = refusal
            out.append(raw)
        elif t == _COPY_IN or t == _COPY_BOTH:
            out.append(raw)
        elif t == _COPY_DATA:
            ex = self._current()
            if ex is not None and ex.withheld:
                return
            data = self.gw.mask_copy_data(body, ex.decision if ex else None)
            if data is not body:
                body = data
                raw = b"d" + (len(body) + 4).to_bytes(4, "big") + body
            if ex is not None and ex.recorder is not None:
                ex.recorder.add_copy_data(body)
            out.append(raw)
        elif t == _COPY_DONE:
            ex = self._current()
            if ex is None or not ex.withheld:
                out.append(raw)
        else:
            out.append(raw)

    def _drain_local(self, out: list[bytes]) -> None:
        ops = self.ops
        while ops and ops[0].kind == "local":
            out.append(ops.popleft().payload())

    def _late_prepare(self, ex: Execution) -> None:
        portal = ex.portal
        if portal is None:
            return
        fields = portal.fields or (portal.statement.fields if portal.statement else None)
        if fields is not None:
            self._prepare_result(ex, fields, portal.result_formats)

    def _fields(self, body: bytes) -> list:
        """The fields of a RowDescription, decoded once per distinct body: the same list
        object comes back for the same body, so result plans can be keyed by it."""
        fields = self._rowdescs.get(body)
        if fields is None:
            fields = list(be.decode_row_description(body))
            if len(self._rowdescs) >= _PLANS_MAX:
                self._rowdescs.clear()
            self._rowdescs[body] = fields
        return fields

    def _prepare_result(self, ex: Execution, fields: list, result_formats: tuple[int, ...]) -> None:
        ex.prepared = True
        decision = ex.decision
        catalog = self.gw.catalogs.get(self.info.connection)
        # a plan with no masker is reused while decision, columns, formats and catalog
        # map are the same objects (held by the plan, so their ids stay theirs)
        key = (id(decision), id(fields), result_formats)
        plan = self._plans.get(key)
        if (
            plan is not None
            and plan.decision is decision
            and plan.fields is fields
            and plan.catalog is catalog
        ):
            ex.masker = None
            if ex.recorder is not None:
                ex.recorder.set_columns(plan.names, plan.head)
            return
        names, head = self._columns(fields)
        formats = (
            _formats(len(fields), result_formats) if result_formats else [f.format for f in fields]
        )
        ex.masker, reusable = self.gw.result_plan(
            decision, fields, formats, connection=self.info.connection
        )
        if ex.recorder is not None:
            ex.recorder.set_columns(names, head)
        if reusable:
            if len(self._plans) >= _PLANS_MAX:
                self._plans.clear()
            self._plans[key] = Plan(decision, fields, catalog, names, head)

    def _columns(self, fields: list) -> tuple[list[str], bytes]:
        """A result's column names and its recorded payload's first line, made once per
        fields list (a masked result cannot reuse a plan, but its columns are the same)."""
        entry = self._column_heads.get(id(fields))
        if entry is None or entry[0] is not fields:
            names = [f.name for f in fields]
            entry = (fields, names, columns_head(names))  # holds fields: its id stays its
            if len(self._column_heads) >= _PLANS_MAX:
                self._column_heads.clear()
            self._column_heads[id(fields)] = entry
        return entry[1], entry[2]

    def _finish(self, ex: Execution, *, tag: str | None = None, error: dict | None = None) -> None:
        if ex.done:
            return
        ex.done = True
        if ex.decision is not None:
            # what a PREPARE, DECLARE or DEALLOCATE did to the policy's names follows
            # what the target did (it refuses a PREPARE of a name it holds)
            if error is not None:
                self.policy.statement_failed(ex.decision.facts)
            elif tag is not None and tag.startswith(("DEALLOCATE", "DISCARD")):
                self.policy.statement_ran(ex.decision.facts, tag)
        if ex.seq_future is None or ex.recorder is None:
            return
        if self.gw.results_wait_in_store and not self._results:
            # the store holds result events back for the next command's commit itself
            # (the writer process): no timer here, no list
            self.gw.record_result(
                self.info, ex, tag=tag, error=error, rows=rows_from_tag(tag) if tag else None
            )
            return
        results = self._results
        if not results:
            # one timer per relay, not one per statement: it is not cancelled when the
            # next command takes the results along, and when it fires early for results
            # that came later it waits out the rest of their delay (see _results_due)
            self._results_since = self.loop.time()
            if self._results_timer is None:
                self._results_timer = self.loop.call_later(RESULT_DELAY, self._results_due)
        results.append((ex, tag, error))

    def _results_due(self) -> None:
        self._results_timer = None
        if not self._results or self.closed:
            return
        wait = self._results_since + RESULT_DELAY - self.loop.time()
        if wait > 0:
            self._results_timer = self.loop.call_later(wait, self._results_due)
            return
        self._submit_results()

    def _undo(self, ops: list[Op]) -> None:
        """Take back what Parse, Bind and Close messages did to the relay's names when
        the target did not carry them out (refused, or skipped after an error): the
        relay must decide a name as what the target will run under it. Undone newest
        first; a record is (S or P, name, before, after) and is undone only while the
        name still holds `after` (it may have been given to another since)."""
        for op in reversed(ops):
            if op.kind not in ("parse", "bind", "close") or not op.payload:
                continue
            for record in reversed(op.payload):
                kind, name, before, after = record
                if kind in ("pS", "pP"):  # the policy's names (SQL PREPARE, DECLARE)
                    self.policy.undo_protocol(record)
                    continue
                table = self.statements if kind == "S" else self.portals
                if table.get(name) is not after:
                    continue
                if before is None:
                    table.pop(name, None)
                else:
                    table[name] = before

    def _forget_portals(self, ended: int) -> None:
        """A transaction ended at the Sync or Query numbered `ended`: the target dropped
        every portal bound before it (protocol portals never outlive their
        transaction). Kept, a stale name would be decided as its old statement while
        the target runs a cursor later declared in SQL under the same name."""
        if self.portals:
            self.portals = {k: p for k, p in self.portals.items() if p.generation >= ended}

    def _forget_deallocated(self, name: str | None) -> None:
        """SQL DEALLOCATE also drops statements made by Parse: the name is free again
        (a name the relay still held would refuse a new Parse of it as a duplicate)."""
        if name == "*":
            self.statements = {k: v for k, v in self.statements.items() if k == ""}
        elif name:
            self.statements.pop(name, None)

    def _submit_results(self) -> None:
        """Hand the finished statements' result events to the store, in order."""
        pending, self._results = self._results, []
        for ex, tag, error in pending:
            self.gw.record_result(
                self.info, ex, tag=tag, error=error, rows=rows_from_tag(tag) if tag else None
            )


def _formats(n: int, result_formats: tuple[int, ...]) -> list[int]:
    if not result_formats:
        return [0] * n
    if len(result_formats) == 1:
        return [result_formats[0]] * n
    return list(result_formats[:n]) + [0] * max(0, n - len(result_formats))
