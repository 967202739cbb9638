"""The PostgreSQL relay: the hot path between one agent and its target backend.

Theory of operation
-------------------
Two asyncio Protocols (`_AgentSide`, `_TargetSide`) feed one `PgRelay`. Agent bytes are
framed with the sans-IO `MessageReader`; each message is handled in order:

* Query / Parse go through the policy session. An allowed Query gets one `command`
  event per statement; an allowed extended-protocol statement gets its `command` event at
  Execute, with the parameters Bind gave it.
* Every message of one read is collected into a *batch*. The batch is written to the
  target only when every event it needs is durable (write-ahead audit): the store's
  futures call back into the loop, no task per statement.
* A denied statement is never forwarded. In its place the target receives a fixed text
  that cannot parse (`INJECTED_SQL`); the target answers with an ErrorResponse, which the
  relay swaps for wardgate's own 42501 error. The target thus fails the transaction
  exactly as it would for any error in that position, and in the extended protocol
  discards up to Sync, as PostgreSQL does.
* A statement sent to review stops the reading of agent messages; the approval wait
  runs as a task, and on its outcome the statement is forwarded or refused as above.

Responses are matched to requests through `ops`, a FIFO of what each forwarded message
will produce (the way pgproto and Teleport track the extended protocol). DataRows pass as
raw slices unless a masker applies; each statement's rows are recorded within a byte
budget by a `ResultRecorder`. A statement's `result` event is handed to the store with
the next command event (at most `RESULT_DELAY` later, and always before session_end):
the two then share one group commit, and a session of short statements pays one
durable write per statement, not two. Only the command event gates forwarding. Once that budget is spent and no masker applies to the
result (no column can hold a value to mask), the rest of each run of DataRows in the
buffer is forwarded, counted and digested as one slice (`MessageReader.next_run`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wardgate.engines.postgres.results import ResultRecorder, columns_head, rows_from_tag
from wardgate.pipeline.command import Command, Decision, SessionInfo, Verdict
from wardgate.policy.facts import is_on, is_utf8_name
from wardgate.wire.pg import backend as be
from wardgate.wire.pg import frontend as fe
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.framing import MessageReader, ProtocolError

if TYPE_CHECKING:
    from wardgate.pipeline.gateway import Gateway

__all__ = ["PgRelay", "INJECTED_SQL", "STORE_UNAVAILABLE", "RESULT_DELAY"]

log = logging.getLogger("wardgate.postgres")

# Sent to the target in place of a refused statement: it cannot parse, so the target
# fails exactly as for an error at that point; its ErrorResponse is replaced by ours.
INJECTED_SQL = "wardgate refused this statement"
STORE_UNAVAILABLE = "wardgate: audit store unavailable"

_Q, _P, _B, _E, _D, _C, _S, _H, _X, _F = (ord(c) for c in "QPBEDCSHXF")
_COPY_DATA, _COPY_DONE, _COPY_FAIL = ord("d"), ord("c"), ord("f")
_ROW, _ROWDESC, _CMD, _ERR, _RFQ, _NOTICE, _NOTIFY = (ord(c) for c in "DTCEZNA")
_PARSE_OK, _BIND_OK, _CLOSE_OK, _NODATA, _PARAMDESC, _EMPTY, _SUSPENDED = (
    ord(c) for c in "123nt" + "Is"
)
_COPY_IN, _COPY_OUT, _COPY_BOTH = ord("G"), ord("H"), ord("W")
_PARAMSTATUS = ord("S")


class _SessionClosed(Exception):
    """The session was closed while handling a target message: stop at once."""


_HIGH_WATER = 1024 * 1024
# how long a finished statement's result event may wait for the next command event
RESULT_DELAY = 0.005
_PLANS_MAX = 256


@dataclass(slots=True)
class _Statement:
    text: str
    decisions: list[tuple[Command, Decision]]
    fields: list[Any] | None = None
    extra: dict | None = None  # evidence carried to each execution (an approval)


@dataclass(slots=True)
class _Portal:
    statement: _Statement | None
    params: tuple[str | None, ...]
    result_formats: tuple[int, ...]
    fields: list[Any] | None = None


@dataclass(slots=True)
class _Execution:
    """One statement execution whose response is being recorded."""

    text: str
    decision: Decision | None
    seq_future: Any = None  # concurrent.futures.Future[EventRecord]
    recorder: ResultRecorder | None = None
    masker: Any = None
    portal: _Portal | None = None
    done: bool = False
    prepared: bool = False  # column info known and masker chosen
    # rows that cannot be masked (a masking failure, binary COPY...) are withheld and the
    # statement ends with this error instead of its CommandComplete
    withheld: str | None = None


@dataclass(slots=True)
class _Plan:
    """A result plan with no masker: what preparing the same result again gives."""

    decision: Decision | None
    fields: list[Any]
    catalog: Any  # the catalog map it was made with
    names: list[str]
    head: bytes  # the recorded payload's first line


@dataclass(slots=True)
class _Op:
    """What one forwarded message will produce in the response stream."""

    kind: str  # parse bind describe execute close sync query inject local flush
    execs: list[_Execution] = field(default_factory=list)
    index: int = 0
    payload: Any = None  # describe: (kind, name); inject: error bytes; local: callable


class _AgentSide(asyncio.Protocol):
    def __init__(self, relay: PgRelay) -> None:
        self.relay = relay

    def data_received(self, data: bytes) -> None:
        self.relay.agent_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.agent_lost(exc)

    def pause_writing(self) -> None:
        self.relay.target_t.pause_reading()

    def resume_writing(self) -> None:
        self.relay.target_t.resume_reading()


class _TargetSide(asyncio.Protocol):
    def __init__(self, relay: PgRelay) -> None:
        self.relay = relay

    def data_received(self, data: bytes) -> None:
        self.relay.target_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.target_lost(exc)

    def pause_writing(self) -> None:
        self.relay.agent_t.pause_reading()

    def resume_writing(self) -> None:
        if not self.relay.busy:
            self.relay.agent_t.resume_reading()


class PgRelay:
    def __init__(
        self,
        gateway: Gateway,
        info: SessionInfo,
        agent_t: asyncio.Transport,
        target_t: asyncio.Transport,
        *,
        budget: int,
        on_close: Any = None,
    ) -> None:
        self.gw = gateway
        self.info = info
        self.agent_t = agent_t
        self.target_t = target_t
        self.loop = asyncio.get_running_loop()
        self.policy = gateway.policy_session(info)
        self.budget = budget
        self.from_agent = MessageReader()
        self.from_target = MessageReader()
        self.ops: deque[_Op] = deque()
        self.statements: dict[str, _Statement] = {}
        self.portals: dict[str, _Portal] = {}
        self.busy = False
        self.discarding = False  # extended-protocol error: skip to Sync
        self.tx_status = "I"
        self.closed = False
        self.statement_count = 0
        self.on_close = on_close
        self.end_reason = "agent disconnected"
        self._batch: list[tuple[bytes, _Op | None]] = []
        self._futures: list[Any] = []
        # the batch waiting for its events: (batch, futures, one token per future not done)
        self._pending: tuple[list, list, list[int]] = ([], [], [])
        self._copy_exec: _Execution | None = None
        # set while a DataRow run needs no change and no more decoding (see target_data)
        self._passthrough: ResultRecorder | None = None
        # result events wait (at most RESULT_DELAY) for the next command event, so that
        # both share one group commit (one fsync) instead of one each
        self._results: list[tuple[_Execution, str | None, dict | None]] = []
        self._results_timer: asyncio.TimerHandle | None = None
        self._hold_task: asyncio.Task | None = None
        self.keepalive: Any = None
        # RowDescription body -> fields; (decision, fields, formats) -> plan, see
        # _prepare_result
        self._rowdescs: dict[bytes, list[Any]] = {}
        self._plans: dict[tuple, _Plan] = {}

    # ------------------------------------------------------------------ wiring

    def start(self, agent_leftover: bytes = b"", target_leftover: bytes = b"") -> None:
        self.agent_t.set_protocol(_AgentSide(self))
        self.target_t.set_protocol(_TargetSide(self))
        if target_leftover:
            self.target_data(target_leftover)
        if agent_leftover:
            self.agent_data(agent_leftover)
        self.agent_t.resume_reading()
        self.target_t.resume_reading()

    def close(self, reason: str, *, fatal: bytes | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.end_reason = reason
        if fatal and not self.agent_t.is_closing():
            self.agent_t.write(fatal)
        if self._hold_task is not None:
            self._hold_task.cancel()
        for t in (self.agent_t, self.target_t):
            if not t.is_closing():
                t.close()
        self._submit_results()
        self.gw.record(
            "session_end",
            self.info,
            meta={"statements": self.statement_count, "reason": reason},
        )
        if self.on_close is not None:
            self.on_close(self)

    def agent_lost(self, exc: Exception | None) -> None:
        self.close(
            "agent disconnected" if exc is None else f"agent connection lost: {type(exc).__name__}"
        )

    def target_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.close(
                "target closed the connection",
                fatal=w.error_response(
                    "FATAL", "08006", "wardgate: the target closed the connection"
                ),
            )

    # ------------------------------------------------------------------ agent -> target

    def agent_data(self, data: bytes) -> None:
        if self.closed:
            return
        self.from_agent.feed(data)
        if self.busy:
            if self.from_agent.buffered > _HIGH_WATER:
                self.agent_t.pause_reading()
            return
        self._process_agent()

    def _process_agent(self) -> None:
        reader = self.from_agent
        try:
            while not self.busy and not self.closed:
                msg = reader.next_message()
                if msg is None:
                    break
                self._agent_message(*msg)
        except ProtocolError as exc:
            self.close(
                f"protocol error: {exc}",
                fatal=w.error_response("FATAL", "08P01", f"wardgate: protocol violation: {exc}"),
            )
            return
        except Exception:  # fail closed: what could not be handled is not forwarded
            log.exception("agent message handling failed")
            self.close(
                "internal error",
                fatal=w.error_response(
                    "FATAL", "XX000", "wardgate: internal error; the session was closed"
                ),
            )
            return
        self._flush_batch()

    def _agent_message(self, t: int, body: bytes, raw: bytes) -> None:
        if self.discarding and t not in (_S, _X, _COPY_DATA, _COPY_DONE, _COPY_FAIL):
            return
        if t == _Q:
            self._on_query(fe.query_text(body), raw)
        elif t == _P:
            self._on_parse(fe.decode_parse(body), raw)
        elif t == _B:
            bind = fe.decode_bind(body)
            stmt = self.statements.get(bind.statement)
            if stmt is None and bind.statement:
                # a statement the target knows from SQL PREPARE, bound through the
                # protocol: decided as `EXECUTE name` would be, and recorded at Execute
                stmt = self._sql_object_statement(f"EXECUTE {_ident(bind.statement)}")
                if stmt is None:
                    return
                self.statements[bind.statement] = stmt
            params = tuple(
                None
                if v is None
                else (
                    v.decode("utf-8", "replace")
                    if bind.param_format(i) == 0
                    else "\\x" + bytes(v).hex()
                )
                for i, v in enumerate(bind.params)
            )
            self.portals[bind.portal] = _Portal(
                stmt, params, tuple(bind.result_formats), stmt.fields if stmt else None
            )
            self._batch.append((raw, _Op("bind")))
        elif t == _E:
            self._on_execute(fe.decode_execute(body).portal, raw)
        elif t == _D:
            d = fe.decode_describe(body)
            self._batch.append((raw, _Op("describe", payload=(d.kind, d.name))))
        elif t == _C:
            c = fe.decode_close(body)
            (self.statements if c.kind == "S" else self.portals).pop(c.name, None)
            self._batch.append((raw, _Op("close")))
        elif t == _S:
            self.discarding = False
            self._batch.append((raw, _Op("sync")))
        elif t == _H:
            self._batch.append((raw, None))
        elif t in (_COPY_DATA, _COPY_DONE, _COPY_FAIL):
            self._batch.append((raw, None))
        elif t == _X:
            self._flush_batch()
            self.end_reason = "agent terminated"
            self.close("agent terminated")
        elif t == _F:
            self._refuse_simple(
                "gateway/function-call",
                "fastpath function calls bypass statement policy",
                text=f"<FunctionCall oid={fe.decode_function_call(body).oid}>",
            )
        else:
            # unknown message: passed through as raw bytes, and recorded as such, durably
            # before it is forwarded like any command
            self._futures.append(
                self.gw.record(
                    "raw_message",
                    self.info,
                    meta={"type": chr(t), "length": len(raw), "direction": "agent"},
                )
            )
            self._batch.append((raw, None))

    # --- simple query

    def _on_query(self, sql: str, raw: bytes) -> None:
        setting = self.gw.wardgate_setting(sql)
        if setting is not None:
            self._take_setting(*setting)
            self._push_local(lambda: w.command_complete("SET") + w.ready_for_query(self.tx_status))
            return
        decisions = self._evaluate(sql, "simple")
        if decisions is None:
            return
        verdict, rule_decision = _strictest(decisions)
        if verdict is Verdict.DENY:
            self._record_decisions(decisions)
            self._inject(rule_decision, simple=True)
            return
        if verdict is Verdict.REVIEW:
            self._hold(decisions, raw, simple=True)
            return
        self._forward_query(decisions, raw)

    def _forward_query(
        self, decisions: list[tuple[Command, Decision]], raw: bytes, extra: dict | None = None
    ) -> None:
        execs = []
        for command, decision in decisions:
            fut = self._record_command(command, decision, **(extra or {}))
            execs.append(_Execution(command.text, decision, fut, ResultRecorder(self.budget)))
        self._futures.extend(e.seq_future for e in execs)
        self._batch.append((raw, _Op("query", execs=execs)))

    # --- extended protocol

    def _on_parse(self, parse: Any, raw: bytes) -> None:
        setting = self.gw.wardgate_setting(parse.query)
        if setting is not None:
            self._take_setting(*setting)
        decisions = self._evaluate(parse.query, "parse")
        if decisions is None:
            return
        verdict, rule_decision = _strictest(decisions)
        if verdict is Verdict.DENY:
            self._record_decisions(decisions)
            self._inject(rule_decision, simple=False)
            return
        if verdict is Verdict.REVIEW:
            self._hold(decisions, raw, simple=False, parse=parse)
            return
        self._accept_parse(parse, decisions, raw)

    def _accept_parse(
        self, parse: Any, decisions: list, raw: bytes, extra: dict | None = None
    ) -> None:
        self.statements[parse.name] = _Statement(parse.query, decisions, extra=extra)
        self._batch.append((raw, _Op("parse", payload=parse.name)))

    def _on_execute(self, portal_name: str, raw: bytes) -> None:
        portal = self.portals.get(portal_name)
        if portal is None and portal_name:
            # a cursor the target knows from SQL DECLARE, fetched through the protocol:
            # decided and recorded as the FETCH it is
            stmt = self._sql_object_statement(f"FETCH FORWARD ALL FROM {_ident(portal_name)}")
            if stmt is None:
                return
            portal = _Portal(stmt, (), ())
        stmt = portal.statement if portal else None
        if stmt is None:
            # unknown portal: the target will refuse it; nothing runs
            self._batch.append((raw, _Op("execute", execs=[_Execution("<unknown portal>", None)])))
            return
        command, decision = stmt.decisions[0] if stmt.decisions else (None, None)
        if command is None:
            self._batch.append((raw, _Op("execute", execs=[_Execution(stmt.text, None)])))
            return
        bound = Command(command.session, stmt.text, portal.params, 0, "execute")
        fut = self._record_command(bound, decision, **(stmt.extra or {}))
        self._futures.append(fut)
        ex = _Execution(stmt.text, decision, fut, ResultRecorder(self.budget), portal=portal)
        fields = portal.fields or stmt.fields
        if fields is not None:
            self._prepare_result(ex, fields, portal.result_formats)
        self._batch.append((raw, _Op("execute", execs=[ex])))

    def _sql_object_statement(self, text: str) -> _Statement | None:
        """Decide a protocol message that uses a statement or cursor made in SQL.

        Allowed: the statement to record it under. Anything else is refused here (a hold
        cannot wait on a Bind or an Execute), with the target discarding up to Sync.
        """
        decisions = self._evaluate(text, "bind")
        if decisions is None:
            return None
        verdict, rule_decision = _strictest(decisions)
        if verdict is Verdict.ALLOW:
            return _Statement(text, decisions)
        self._record_decisions(decisions)
        message = None
        if verdict is Verdict.REVIEW:
            message = (
                f'wardgate: rule "{rule_decision.rule}" holds this statement for approval; '
                "a statement prepared in SQL cannot be held at Bind: run it with EXECUTE"
            )
        self._inject(rule_decision, simple=False, message=message)
        return None

    # --- policy, refusal, holds

    def _evaluate(self, sql: str, via: str) -> list[tuple[Command, Decision]] | None:
        try:
            return self.policy.evaluate(sql, via=via)
        except Exception as exc:  # fail closed: a policy that cannot decide refuses
            log.exception("policy evaluation failed")
            decision = Decision(
                Verdict.DENY,
                "gateway/policy-error",
                f"the policy could not decide: {type(exc).__name__}",
            )
            cmd = Command(self.info, sql, (), 0, via)
            self._record_decisions([(cmd, decision)])
            self._inject(decision, simple=via == "simple")
            return None

    def _take_setting(self, key: str, value: str) -> None:
        if key == "reason":
            self.info = _replace_reason(self.info, value)
            self.gw.record("session_reason", self.info, meta={"reason": value})

    def _record_command(self, command: Command, decision: Decision, **extra: Any) -> Any:
        self.statement_count += 1
        if self._results:
            self._submit_results()  # in order, and in the same group commit as this one
        return self.gw.record_command(command, decision, **extra)

    def _record_decisions(self, decisions: list[tuple[Command, Decision]], **extra: Any) -> None:
        for command, decision in decisions:
            self._futures.append(self._record_command(command, decision, **extra))

    def _inject(
        self,
        decision: Decision,
        *,
        simple: bool,
        message: str | None = None,
        sqlstate: str = "42501",
    ) -> None:
        text = message or f'wardgate: denied by rule "{decision.rule}": {decision.reason}'
        err = w.error_response("ERROR", sqlstate, self.gw.mask_text(text))
        if simple:
            self._batch.append((w.query(INJECTED_SQL), _Op("inject", index=1, payload=err)))
        else:
            self._batch.append((w.parse("", INJECTED_SQL, ()), _Op("inject", payload=err)))
            self.discarding = True

    def _refuse_simple(self, rule: str, reason: str, *, text: str) -> None:
        decision = Decision(Verdict.DENY, rule, reason)
        self._record_decisions([(Command(self.info, text, (), 0, "function_call"), decision)])
        self._inject(decision, simple=True)

    def _hold(self, decisions: list, raw: bytes, *, simple: bool, parse: Any = None) -> None:
        self._flush_batch()
        self.busy = True
        self._hold_task = self.loop.create_task(self._await_review(decisions, raw, simple, parse))

    async def _await_review(self, decisions: list, raw: bytes, simple: bool, parse: Any) -> None:
        extra: dict = {}
        try:
            approved, message, extra = await self.gw.review(self, decisions, self._notice)
        except asyncio.CancelledError:
            return
        except Exception:  # fail closed
            log.exception("approval flow failed")
            approved, message = False, "wardgate: approval could not be obtained"
        if self.closed:
            return
        _, rule_decision = _strictest(decisions)
        if approved:
            if simple:
                self._forward_query(decisions, raw, extra)
            else:
                self._accept_parse(parse, decisions, raw, extra)
        else:
            self._inject(rule_decision, simple=simple, message=message)
        self.busy = False
        self._flush_batch()
        if not self.busy:
            self.agent_t.resume_reading()
            self._process_agent()

    def _notice(self, text: str) -> None:
        if not self.closed:
            self.agent_t.write(w.notice_response("NOTICE", "00000", text))

    # --- batches and durability

    def _flush_batch(self) -> None:
        if not self._batch or self.busy:
            return
        futures = [f for f in self._futures if f is not None]
        self._futures = []
        batch, self._batch = self._batch, []
        if not futures:
            self._write_batch(batch)
            return
        # write-ahead: the batch waits until every event it needs is durable. While busy
        # nothing else is flushed, so one pending batch per relay.
        self.busy = True
        self._pending = (batch, futures, list(range(len(futures))))
        for fut in futures:
            fut.add_done_callback(self._event_done)

    def _event_done(self, _fut: Any) -> None:
        # Runs on the store's writer thread, or on this one for a future already done:
        # list.pop() is atomic, and exactly one callback pops the last token, 0.
        batch, futures, tokens = self._pending
        if tokens.pop() == 0:
            self.loop.call_soon_threadsafe(self._batch_durable, batch, futures)

    def _batch_durable(self, batch: list, futures: list) -> None:
        if self.closed:
            return
        for f in futures:
            if f.exception() is not None:
                log.error("audit store unavailable; refusing the batch")
                batch = self._refuse_batch(batch)
                break
        self.busy = False
        self._write_batch(batch)
        self.agent_t.resume_reading()
        self._process_agent()

    def _refuse_batch(self, batch: list) -> list:
        """Store failure: nothing that runs a statement reaches the target."""
        err = w.error_response("ERROR", "58000", STORE_UNAVAILABLE)
        out: list[tuple[bytes, _Op | None]] = []
        skipping = False
        for raw, op in batch:
            kind = op.kind if op else None
            if kind == "sync":
                skipping = False
                out.append((raw, op))
            elif skipping:
                continue
            elif kind == "query":
                out.append((w.query(INJECTED_SQL), _Op("inject", index=1, payload=err)))
            elif kind in ("parse", "bind", "execute", "describe"):
                out.append((w.parse("", INJECTED_SQL, ()), _Op("inject", payload=err)))
                skipping = True
            elif kind == "inject":
                out.append((raw, op))
            elif kind is None and raw[:1] in (b"d", b"c", b"f", b"H"):
                out.append((raw, op))
        return out

    def _write_batch(self, batch: list) -> None:
        if not batch:
            return
        if len(batch) == 1:
            data, op = batch[0]
            if op is not None:
                self.ops.append(op)
        else:
            out = []
            for raw, op in batch:
                out.append(raw)
                if op is not None:
                    self.ops.append(op)
            data = b"".join(out)
        self.target_t.write(data)
        if self.ops and self.ops[0].kind == "local":
            local: list[bytes] = []
            self._drain_local(local)
            self.agent_t.write(b"".join(local))

    def _push_local(self, make: Any) -> None:
        op = _Op("local", payload=make)
        if not self.ops and not self._batch:
            self.agent_t.write(make())
        else:
            self._batch.append((b"", op))

    # ------------------------------------------------------------------ target -> agent

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
                    # the rest of this run of DataRows passes unchanged, as one slice
                    run = reader.next_run(_ROW)
                    if run is not None:
                        out.append(run[0])
                        self._passthrough.add_rows(run[0], run[1])
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

    def _current(self) -> _Execution | None:
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
                        log.error("masking failed: %s", type(exc).__name__)
                        ex.withheld = (
                            "wardgate: masking failed on a row; the rest of the result was withheld"
                        )
                        return
                    if masked is not body and masked != body:
                        body = masked
                        raw = b"D" + (len(body) + 4).to_bytes(4, "big") + body
                rec = ex.recorder
                if rec is not None:
                    rec.add_row(raw, body)
                    if masker is None and rec.truncated:
                        self._passthrough = rec
            else:
                # rows nobody planned for (no RowDescription seen): baseline entity scan
                masked = self.gw.mask_unplanned_row(body)
                if masked is not body:
                    raw = b"D" + (len(masked) + 4).to_bytes(4, "big") + masked
            out.append(raw)
            return
        ops = self.ops
        op = ops[0] if ops else None
        if t == _CMD or t == _EMPTY or t == _SUSPENDED:
            ex = self._current()
            tag = (
                be.decode_command_complete(body).tag
                if t == _CMD
                else ("" if t == _EMPTY else "(suspended)")
            )
            if ex is not None and ex.withheld:
                raw = w.error_response("ERROR", "42501", ex.withheld)
                self._finish(ex, error={"sqlstate": "42501", "message": ex.withheld})
            elif ex is not None:
                self._finish(ex, tag=tag)
            if op is not None:
                if op.kind == "query":
                    op.index += 1
                elif op.kind == "execute":
                    ops.popleft()
            out.append(raw)
        elif t == _ROWDESC:
            fields = self._fields(body)
            if op is not None:
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
                    ops.appendleft(_Op("inject_done"))
                return
            fields = be.decode_fields(body)
            error = {"sqlstate": fields.get("C"), "message": self.gw.mask_text(fields.get("M", ""))}
            ex = self._current()
            if ex is not None:
                self._finish(ex, error=error)
            if op is not None and op.kind == "query":
                op.index += 1
            elif op is not None and op.kind not in ("sync",):
                # extended protocol: the target skips to Sync
                while ops and ops[0].kind not in ("sync", "query"):
                    dropped = ops.popleft()
                    for dx in dropped.execs:
                        if not dx.done:
                            self._finish(dx, error={"sqlstate": None, "message": "not run"})
            out.append(self.gw.mask_error(raw, body))
        elif t == _PARSE_OK or t == _BIND_OK or t == _CLOSE_OK or t == _NODATA:
            if op is not None and op.kind in ("parse", "bind", "close", "describe"):
                ops.popleft()
            out.append(raw)
        elif t == _PARAMDESC:
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
            out.append(self.gw.mask_error(raw, body, notice=True))
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

    def _late_prepare(self, ex: _Execution) -> None:
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

    def _prepare_result(
        self, ex: _Execution, fields: list, result_formats: tuple[int, ...]
    ) -> None:
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
        names = [f.name for f in fields]
        formats = (
            _formats(len(fields), result_formats) if result_formats else [f.format for f in fields]
        )
        ex.masker, reusable = self.gw.result_plan(
            decision, fields, formats, connection=self.info.connection
        )
        if ex.recorder is not None:
            ex.recorder.set_columns(names)
        if reusable:
            if len(self._plans) >= _PLANS_MAX:
                self._plans.clear()
            self._plans[key] = _Plan(decision, fields, catalog, names, columns_head(names))

    def _finish(self, ex: _Execution, *, tag: str | None = None, error: dict | None = None) -> None:
        if ex.done:
            return
        ex.done = True
        if ex.seq_future is None or ex.recorder is None:
            return
        self._results.append((ex, tag, error))
        if self._results_timer is None:
            self._results_timer = self.loop.call_later(RESULT_DELAY, self._submit_results)

    def _submit_results(self) -> None:
        """Hand the finished statements' result events to the store, in order."""
        timer, self._results_timer = self._results_timer, None
        if timer is not None:
            timer.cancel()
        pending, self._results = self._results, []
        for ex, tag, error in pending:
            self.gw.record_result(
                self.info, ex, tag=tag, error=error, rows=rows_from_tag(tag) if tag else None
            )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _formats(n: int, result_formats: tuple[int, ...]) -> list[int]:
    if not result_formats:
        return [0] * n
    if len(result_formats) == 1:
        return [result_formats[0]] * n
    return list(result_formats[:n]) + [0] * max(0, n - len(result_formats))


_ORDER = {Verdict.ALLOW: 0, Verdict.REVIEW: 1, Verdict.DENY: 2}


def _strictest(decisions: list[tuple[Command, Decision]]) -> tuple[Verdict, Decision]:
    best = decisions[0][1]
    for _, d in decisions[1:]:
        if _ORDER[d.verdict] > _ORDER[best.verdict]:
            best = d
    return best.verdict, best


def _replace_reason(info: SessionInfo, reason: str) -> SessionInfo:
    return SessionInfo(
        info.session_id,
        info.identity,
        info.groups,
        info.connection,
        info.protocol,
        info.client_addr,
        info.application_name,
        reason,
    )
