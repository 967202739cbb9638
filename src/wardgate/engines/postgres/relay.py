"""The PostgreSQL relay: the hot path between one agent and its target backend.

Theory of operation
-------------------
Two asyncio Protocols (`_AgentSide`, `TargetSide`) feed one `PgRelay`. Agent bytes are
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
  runs as a task, and on its outcome the statement is forwarded or refused as above. In
  the extended protocol the hold is at Execute (Parse runs nothing), so the reviewer sees
  the bound parameters, and each Execute is held on its own.

The response side (target -> agent) is `ResponseSide` in `responses.py`, a mixin.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from wardgate.engines.postgres.responses import (
    RESULT_DELAY,
    Execution,
    Op,
    Plan,
    Portal,
    ResponseSide,
    Statement,
    TargetSide,
)
from wardgate.engines.postgres.results import ResultRecorder
from wardgate.metrics import METRICS
from wardgate.pipeline.command import Command, Decision, SessionInfo, Verdict
from wardgate.policy.engine import MAX_SESSION_OBJECTS
from wardgate.wire.pg import frontend as fe
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.framing import MessageReader, ProtocolError
from wardgate.wire.pg.params import parameter_text

if TYPE_CHECKING:
    from wardgate.pipeline.gateway import Gateway

__all__ = ["PgRelay", "INJECTED_SQL", "STORE_UNAVAILABLE", "RESULT_DELAY"]

_Execution = Execution  # the name bench/pipeline_costs.py and older callers use

log = logging.getLogger("wardgate.postgres")

# Sent to the target in place of a refused statement: it cannot parse, so the target
# fails exactly as for an error at that point; its ErrorResponse is replaced by ours.
INJECTED_SQL = "wardgate refused this statement"
STORE_UNAVAILABLE = "wardgate: audit store unavailable"

_Q, _P, _B, _E, _D, _C, _S, _H, _X, _F = (ord(c) for c in "QPBEDCSHXF")
_COPY_DATA, _COPY_DONE, _COPY_FAIL = ord("d"), ord("c"), ord("f")

# Flow control (DESIGN rule 4): the gateway stops reading the agent while it is busy,
# while either side's write buffer is over its high-water mark (the agent does not read
# its results, or the target does not read what it was sent: a PostgreSQL backend
# likewise stops reading while it cannot write), and while _MAX_IN_FLIGHT forwarded
# messages await their answers (each holds its execution state); reading resumes at
# half that. What one read already brought stays framed in `from_agent`, at most
# _HIGH_WATER bytes more.
_HIGH_WATER = 1024 * 1024
_MAX_IN_FLIGHT = 4096
_FLUSH = b"H\x00\x00\x00\x04"  # a Flush message: the server sends what it holds back
# Statements in one message: each is parsed, decided and recorded before any runs
# (~4 KiB each), so one 64 MiB Query of `select 1;` would take gigabytes. Counted by
# its ';' (an upper bound: a ';' inside a literal counts too), and only in a message
# long enough to hold that many.
MAX_STATEMENTS_PER_MESSAGE = 10000
# Named prepared statements one session may hold (~1.5 KiB of gateway memory each, for
# as long as the session lasts): statement caches of clients keep 100 to 256. The same
# bound as the policy's for SQL PREPARE and DECLARE.
MAX_PREPARED_STATEMENTS = MAX_SESSION_OBJECTS


class _AgentSide(asyncio.Protocol):
    def __init__(self, relay: PgRelay) -> None:
        self.relay = relay

    def data_received(self, data: bytes) -> None:
        self.relay.agent_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.agent_lost(exc)

    def pause_writing(self) -> None:
        # the agent does not read: stop reading the target, and the agent too (answers
        # the gateway makes itself would otherwise pile up)
        self.relay.agent_full = True
        self.relay.target_t.pause_reading()
        self.relay.agent_t.pause_reading()

    def resume_writing(self) -> None:
        self.relay.agent_full = False
        self.relay.target_t.resume_reading()
        self.relay.unblocked()


class PgRelay(ResponseSide):
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
        self.ops: deque[Op] = deque()
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        # busy: agent messages wait. Two reasons, which can overlap: a batch waits for its
        # events to be durable (_waiting), a statement waits for reviewers (_holding)
        self.busy = False
        self._waiting = False
        self._holding = False
        # flow control (see _MAX_IN_FLIGHT): a write buffer over its high-water mark,
        # or reading stopped at the in-flight limit
        self.agent_full = False
        self.target_full = False
        self._capped = False
        self.discarding = False  # extended-protocol error: skip to Sync
        self.tx_status = "I"
        self.closed = False
        self.statement_count = 0
        self.on_close = on_close
        self.end_reason = "agent disconnected"
        self._batch: list[tuple[bytes, Op | None]] = []
        self._futures: list[Any] = []
        # the batch waiting for its events: (batch, futures, one token per future not done)
        self._pending: tuple[list, list, list[int]] = ([], [], [])
        self._copy_exec: Execution | None = None
        # Syncs and Queries forwarded so far: a portal remembers the count it was bound
        # at, so a transaction's end forgets exactly the portals bound before it
        self._syncs = 0
        # set while a DataRow run needs no change and no more decoding (see target_data)
        self._passthrough: ResultRecorder | None = None
        self._pass_masker: Any = None
        # result events wait (at most RESULT_DELAY) for the next command event, so that
        # both share one group commit (one fsync) instead of one each
        self._results: list[tuple[Execution, str | None, dict | None]] = []
        self._results_timer: asyncio.TimerHandle | None = None
        self._results_since = 0.0
        self._hold_task: asyncio.Task | None = None
        self.keepalive: Any = None
        # RowDescription body -> fields; (decision, fields, formats) -> plan, see
        # _prepare_result
        self._rowdescs: dict[bytes, list[Any]] = {}
        self._plans: dict[tuple, Plan] = {}
        self._column_heads: dict[int, tuple[list[Any], list[str], bytes]] = {}

    # ------------------------------------------------------------------ wiring

    def start(self, agent_leftover: bytes = b"", target_leftover: bytes = b"") -> None:
        self.agent_t.set_protocol(_AgentSide(self))
        self.target_t.set_protocol(TargetSide(self))
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
        if self._results_timer is not None:
            self._results_timer.cancel()
            self._results_timer = None
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
        if self.busy or self.agent_full or self.target_full or self._capped:
            if self.from_agent.buffered > _HIGH_WATER:
                self.agent_t.pause_reading()
            return
        self._process_agent()

    def unblocked(self) -> None:
        """A reason to stop reading the agent went away: carry on if none is left."""
        if not (self.busy or self.agent_full or self.target_full or self.closed):
            if self._capped and len(self.ops) > _MAX_IN_FLIGHT // 2:
                return
            self._capped = False
            self._resume()

    def _process_agent(self) -> None:
        reader = self.from_agent
        room = _MAX_IN_FLIGHT - len(self.ops)
        try:
            while not self.busy and not self.closed:
                if len(self._batch) >= room or self.agent_full or self.target_full:
                    if len(self._batch) >= room and not self._capped:
                        self._capped = True
                        # only answers lift the cap, and PostgreSQL holds answers back
                        # until a Sync, a Flush or a full output buffer: without this
                        # Flush the last answers of a pipeline with no Sync yet (psycopg's
                        # pipeline, asyncpg's executemany) could wait for ever
                        self._batch.append((_FLUSH, None))
                    self.agent_t.pause_reading()
                    break
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
            undo: list[tuple[str, str, Any, Any]] = []
            if stmt is None and bind.statement:
                # a statement the target knows from SQL PREPARE, bound through the
                # protocol: decided as `EXECUTE name` would be, and recorded at Execute
                stmt = self._sql_object_statement(f"EXECUTE {_ident(bind.statement)}")
                if stmt is None:
                    return
                self.statements[bind.statement] = stmt
                undo.append(("S", bind.statement, None, stmt))
            elif stmt is None:
                # the unnamed statement the gateway does not know (it forgot it, or none
                # was parsed through it): the target may still hold one. Fail closed.
                self._inject(
                    Decision(Verdict.DENY, "gateway/unknown-statement", "unknown statement"),
                    simple=False,
                    message="wardgate: Bind of an unnamed statement that was not parsed "
                    "through the gateway in this session",
                    sqlstate="26000",
                )
                return
            # binary values become their type's text (the record masks text: a card
            # number sent as int8 must be readable to the masker), by the OIDs of Parse
            oids = stmt.param_types if stmt is not None else ()
            params = tuple(
                None
                if v is None
                else (
                    v.decode("utf-8", "replace")
                    if bind.param_format(i) == 0
                    else parameter_text(bytes(v), 1, oids[i] if i < len(oids) else 0)
                )
                for i, v in enumerate(bind.params)
            )
            portal = Portal(
                stmt, params, tuple(bind.result_formats), stmt.fields, generation=self._syncs
            )
            undo.append(("P", bind.portal, self.portals.get(bind.portal), portal))
            self.portals[bind.portal] = portal
            if bind.portal:
                record = self.policy.protocol_portal(bind.portal, stmt.text)
                if record is not None:
                    undo.append(record)
            # if the target refuses or skips this Bind, the name means what it meant
            # before (see ResponseSide._undo)
            self._batch.append((raw, Op("bind", payload=tuple(undo))))
        elif t == _E:
            self._on_execute(fe.decode_execute(body).portal, raw)
        elif t == _D:
            d = fe.decode_describe(body)
            if d.kind == "P" and (described := self.portals.get(d.name)) is not None:
                described.described = True
            self._batch.append((raw, Op("describe", payload=(d.kind, d.name))))
        elif t == _C:
            c = fe.decode_close(body)
            before = (self.statements if c.kind == "S" else self.portals).pop(c.name, None)
            records: list[tuple] = [(c.kind, c.name, before, None)]
            if c.kind == "S":
                record = self.policy.protocol_statement(c.name, None)  # a SQL PREPARE too
            else:
                record = self.policy.protocol_portal(c.name, None)  # a SQL cursor too
            if record is not None:
                records.append(record)
            self._batch.append((raw, Op("close", payload=tuple(records))))
        elif t == _S:
            self.discarding = False
            self._syncs += 1
            self._batch.append((raw, Op("sync", payload=self._syncs)))
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
            self._not_run(decisions)
            self._inject(rule_decision, simple=True)
            return
        if verdict is Verdict.REVIEW:
            self._hold(decisions, raw)
            return
        self._forward_query(decisions, raw)

    def _forward_query(
        self, decisions: list[tuple[Command, Decision]], raw: bytes, extra: dict | None = None
    ) -> None:
        execs = []
        for command, decision in decisions:
            fut = self._record_command(command, decision, **(extra or {}))
            execs.append(Execution(command.text, decision, fut, ResultRecorder(self.budget)))
        self._futures.extend(e.seq_future for e in execs)
        self._syncs += 1
        self._batch.append((raw, Op("query", execs=execs, payload=self._syncs)))

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
            self._not_run(decisions)
            self._inject(rule_decision, simple=False)
            return
        if parse.name and parse.name in self.statements:
            # the server refuses a second statement of one name and keeps the first, so
            # the gateway keeps deciding the name as the first and stops the duplicate
            # here: forwarded, it would leave the two disagreeing about what the name runs
            self._inject(
                rule_decision,
                simple=False,
                message=f'prepared statement "{parse.name}" already exists',
                sqlstate="42P05",
            )
            return
        if parse.name and len(self.statements) >= MAX_PREPARED_STATEMENTS:
            decision = Decision(
                Verdict.DENY,
                "gateway/too-many-prepared-statements",
                f"more than {MAX_PREPARED_STATEMENTS} prepared statements in one session",
            )
            command = Command(self.info, parse.query, (), 0, "parse")
            self._record_decisions([(command, decision)])
            self._inject(
                decision,
                simple=False,
                message=f'wardgate: denied by rule "{decision.rule}": {decision.reason}; '
                "close some first",
                sqlstate="53400",
            )
            return
        # a statement for review is held at its Execute, not here: only then are its
        # parameters known, and the reviewer must see the values that will run. Parse
        # itself runs nothing.
        self._accept_parse(parse, decisions, raw)

    def _accept_parse(self, parse: Any, decisions: list, raw: bytes) -> None:
        stmt = Statement(parse.query, decisions, param_types=parse.param_type_oids)
        if _strictest(decisions)[0] is Verdict.REVIEW:  # every Execute is held
            stmt.approved_runs = 0
        before = self.statements.get(parse.name)  # only the unnamed one can be replaced
        self.statements[parse.name] = stmt
        records: list[tuple] = [("S", parse.name, before, stmt)]
        record = self.policy.protocol_statement(parse.name, parse.query)
        if record is not None:
            records.append(record)
        # the op keeps which statement this Parse made: if the server refuses the Parse
        # (or skips it after an earlier error), the name means what it meant before,
        # to the relay and to the policy (ResponseSide._undo)
        self._batch.append((raw, Op("parse", payload=tuple(records))))

    def _on_execute(self, portal_name: str, raw: bytes) -> None:
        portal = self.portals.get(portal_name)
        if portal is None and portal_name:
            # a cursor the target knows from SQL DECLARE, fetched through the protocol:
            # decided and recorded as the FETCH it is (the policy reads it as the
            # cursor's query). Its columns come from the target (_accept_execute)
            stmt = self._sql_object_statement(f"FETCH FORWARD ALL FROM {_ident(portal_name)}")
            if stmt is None:
                return
            portal = Portal(stmt, (), ())
        stmt = portal.statement if portal else None
        if stmt is None:
            # the unnamed portal the gateway does not know: fail closed. The target could
            # still hold one the gateway lost track of; forwarded, it would run undecided
            # and unrecorded.
            self._inject(
                Decision(Verdict.DENY, "gateway/unknown-portal", "unknown portal"),
                simple=False,
                message="wardgate: Execute of an unnamed portal that was not bound through "
                "the gateway in this transaction",
                sqlstate="34000",
            )
            return
        command, decision = stmt.decisions[0] if stmt.decisions else (None, None)
        if command is None:
            self._batch.append((raw, Op("execute", execs=[Execution(stmt.text, None)])))
            return
        if self.policy.uses_time and not self._still_allowed(stmt):
            return
        if stmt.approved_runs is not None:
            if stmt.approved_runs > 0:
                stmt.approved_runs -= 1
            else:  # an approval covers one execution: prepare once, run many is held again
                bound = Command(command.session, stmt.text, portal.params, 0, "execute")
                self._hold_execute([(bound, decision)], stmt, portal, raw)
                return
        self._accept_execute(stmt, portal, raw, stmt.extra)

    def _accept_execute(
        self, stmt: Statement, portal: Portal, raw: bytes, extra: dict | None
    ) -> None:
        command, decision = stmt.decisions[0]
        bound = Command(command.session, stmt.text, portal.params, 0, "execute")
        fut = self._record_command(bound, decision, **(extra or {}))
        self._futures.append(fut)
        ex = Execution(stmt.text, decision, fut, ResultRecorder(self.budget), portal=portal)
        fields = portal.fields or stmt.fields
        if fields is not None:
            self._prepare_result(ex, fields, portal.result_formats)
        elif not portal.described:
            # the agent described neither the statement nor the portal (a client may
            # skip Describe): the masker needs the columns, or column rules could not
            # apply to the rows. A Describe of the portal goes first; its answer stays
            # here (ResponseSide: describe_cursor) and sets the portal's fields. (After
            # the agent's own Describe, whose answer comes before the rows, it would
            # be a second one per Execute: libpq describes every portal it executes.)
            name = fe.decode_execute(raw[5:]).portal
            self._batch.append((w.describe("P", name), Op("describe_cursor", payload=portal)))
        self._batch.append((raw, Op("execute", execs=[ex])))

    def _still_allowed(self, stmt: Statement) -> bool:
        """Time windows: a statement decided at Parse is decided again at Execute, and
        refused if the verdict got stricter since (a window closed); not held, since a
        hold cannot wait on an Execute."""
        fresh = self._evaluate(stmt.text, "execute")
        if fresh is None:
            return False
        verdict, decision = _strictest(fresh)
        if _ORDER[verdict] <= _ORDER[_strictest(stmt.decisions)[0]]:
            return True
        self._record_decisions(fresh)
        self._inject(
            decision,
            simple=False,
            message=(
                f'wardgate: rule "{decision.rule}" now gives {verdict.value} for this prepared '
                f"statement (it was decided when prepared): {decision.reason}"
            ),
        )
        return False

    def _sql_object_statement(self, text: str) -> Statement | None:
        """Decide a protocol message that uses a statement or cursor made in SQL.

        Allowed: the statement to record it under. Anything else is refused here (a hold
        cannot wait on a Bind or an Execute), with the target discarding up to Sync.
        """
        decisions = self._evaluate(text, "bind")
        if decisions is None:
            return None
        verdict, rule_decision = _strictest(decisions)
        if verdict is Verdict.ALLOW:
            return Statement(text, decisions)
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
        if len(sql) > MAX_STATEMENTS_PER_MESSAGE and (sql.count(";") > MAX_STATEMENTS_PER_MESSAGE):
            decision = Decision(
                Verdict.DENY,
                "gateway/too-many-statements",
                f"more than {MAX_STATEMENTS_PER_MESSAGE} statements (';') in one message; "
                "send them in several",
            )
            self._record_decisions([(Command(self.info, sql, (), 0, via), decision)])
            self._inject(decision, simple=via == "simple")
            return None
        if not sql.isascii() and not fe.is_utf8(sql):
            # bytes that are not UTF-8 (kept as surrogates by the codec): PostgreSQL's
            # own error, and the statement recorded with those bytes as \xNN escapes
            decision = Decision(Verdict.DENY, "gateway/invalid-utf8", "not valid UTF-8")
            shown = sql.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            self._record_decisions([(Command(self.info, shown, (), 0, via), decision)])
            self._inject(
                decision,
                simple=via == "simple",
                message='wardgate: invalid byte sequence for encoding "UTF8"',
                sqlstate="22021",
            )
            return None
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
            # kept in every later event and shown to reviewers: masked like statement text
            value = self.gw.mask_text(value)
            self.info = _replace_reason(self.info, value)
            # durable before the answer (or the statement) goes out, like a command
            # event: an agent repeating the setting without end is held to the store's
            # pace instead of queueing events faster than they are written
            self._futures.append(
                self.gw.record("session_reason", self.info, meta={"reason": value})
            )

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
            self._batch.append((w.query(INJECTED_SQL), Op("inject", index=1, payload=err)))
        else:
            self._batch.append((w.parse("", INJECTED_SQL, ()), Op("inject", payload=err)))
            self.discarding = True

    def _refuse_simple(self, rule: str, reason: str, *, text: str) -> None:
        decision = Decision(Verdict.DENY, rule, reason)
        self._record_decisions([(Command(self.info, text, (), 0, "function_call"), decision)])
        self._inject(decision, simple=True)

    def _not_run(self, decisions: list) -> None:
        """The gateway refused these statements: a PREPARE or DECLARE among them made
        nothing on the target (see PolicySession.statement_failed)."""
        for _, decision in decisions:
            self.policy.statement_failed(decision.facts)

    def _hold(self, decisions: list, raw: bytes) -> None:
        """Hold a simple-protocol query (its text carries every value)."""
        self._start_hold(self._await_review(decisions, raw))

    def _hold_execute(self, decisions: list, stmt: Statement, portal: Portal, raw: bytes) -> None:
        """Hold one Execute of a statement for review, with the parameters Bind gave it
        (see Statement.approved_runs)."""
        self._start_hold(self._await_execute_review(decisions, stmt, portal, raw))

    def _start_hold(self, review: Any) -> None:
        # what came before the held statement leaves first (once durable); the held
        # statement joins the next batch, which waits for both the hold and that batch
        self._flush_batch()
        self._holding = self.busy = True
        self._hold_task = self.loop.create_task(review)

    async def _ask_review(self, decisions: list) -> tuple[bool, str | None, dict] | None:
        """The reviewers' answer (approved, refusal message, evidence); None when the
        session closed or the hold was cancelled meanwhile. Fails closed."""
        extra: dict = {}
        try:
            approved, message, extra = await self.gw.review(self, decisions, self._notice)
        except asyncio.CancelledError:
            return None
        except Exception:  # fail closed
            log.exception("approval flow failed")
            approved, message = False, "wardgate: approval could not be obtained"
        return None if self.closed else (approved, message, extra)

    async def _await_execute_review(
        self, decisions: list, stmt: Statement, portal: Portal, raw: bytes
    ) -> None:
        answer = await self._ask_review(decisions)
        if answer is None:
            return
        approved, message, extra = answer
        if approved:
            self._accept_execute(stmt, portal, raw, extra)
        else:  # the approval events say what happened; nothing ran
            self._not_run(decisions)
            self._inject(_strictest(decisions)[1], simple=False, message=message)
        self._resume_after_hold()

    async def _await_review(self, decisions: list, raw: bytes) -> None:
        answer = await self._ask_review(decisions)
        if answer is None:
            return
        approved, message, extra = answer
        _, rule_decision = _strictest(decisions)
        if approved:
            self._forward_query(decisions, raw, extra)
        else:
            self._not_run(decisions)
            self._inject(rule_decision, simple=True, message=message)
        self._resume_after_hold()

    def _resume_after_hold(self) -> None:
        self._holding = False
        self.busy = self._waiting  # a batch from before the hold may still be waiting
        self._resume()

    def _resume(self) -> None:
        """Not busy: flush what accumulated, then read the agent again (unless that flush
        has to wait for durability)."""
        if self.busy:
            return
        self._flush_batch()
        if self._capped and len(self.ops) <= _MAX_IN_FLIGHT // 2:
            # the answers that lift the cap may all have come while the batch waited for
            # its events (unblocked() does nothing while busy)
            self._capped = False
        if not (self.busy or self.agent_full or self.target_full or self._capped):
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
        self._waiting = self.busy = True
        self._pending = (batch, futures, list(range(len(futures))))
        for fut in futures:
            fut.add_done_callback(self._event_done)

    def _event_done(self, fut: Any) -> None:
        # A loop future calls back on this thread; a concurrent one on the store's writer
        # thread (or here, if already done). list.pop() is atomic: exactly one callback
        # pops the last token, 0, and releases the batch.
        batch, futures, tokens = self._pending
        if tokens.pop() == 0:
            if isinstance(fut, asyncio.Future):
                self._batch_durable(batch, futures)
            else:
                self.loop.call_soon_threadsafe(self._batch_durable, batch, futures)

    def _batch_durable(self, batch: list, futures: list) -> None:
        failed = False
        for f in futures:  # every exception retrieved, even for a closed session
            if f.exception() is not None:
                failed = True
        if self.closed:
            return
        if failed:
            log.error("audit store unavailable; refusing the batch")
            METRICS.audit_failures[()] += 1
            batch = self._refuse_batch(batch)
        self._waiting = False
        self.busy = self._holding  # a hold that began meanwhile resumes the agent itself
        self._write_batch(batch)
        self._resume()

    def _refuse_batch(self, batch: list) -> list:
        """Store failure: nothing that runs a statement reaches the target."""
        err = w.error_response("ERROR", "58000", STORE_UNAVAILABLE)
        out: list[tuple[bytes, Op | None]] = []
        skipping = False
        # nothing of these reaches the target: the names they made or dropped are undone
        self._undo([op for _, op in batch if op is not None])
        for raw, op in batch:
            kind = op.kind if op else None
            if kind == "sync":
                skipping = False
                out.append((raw, op))
            elif skipping:
                continue
            elif kind == "query":
                out.append((w.query(INJECTED_SQL), Op("inject", index=1, payload=err)))
            elif kind in ("parse", "bind", "execute", "describe", "describe_cursor"):
                out.append((w.parse("", INJECTED_SQL, ()), Op("inject", payload=err)))
                skipping = True
            elif kind == "inject":
                out.append((raw, op))
            elif kind == "local":  # SET wardgate.reason, not recorded: refused too
                out.append((raw, Op("local", payload=self._local_refusal(err))))
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

    def _local_refusal(self, err: bytes) -> Any:
        return lambda: err + w.ready_for_query(self.tx_status)

    def _push_local(self, make: Any) -> None:
        op = Op("local", payload=make)
        if not self.ops and not self._batch and not self._futures:
            self.agent_t.write(make())
        else:
            self._batch.append((b"", op))

    # ------------------------------------------------------------------ target -> agent


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
