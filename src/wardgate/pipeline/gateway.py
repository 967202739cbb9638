"""The pipeline every engine shares: policy, masking, approvals and the audit log.

An engine owns sockets and a codec; it hands each statement to this `Gateway`, which
decides (policy), records (audit, write-ahead), holds (approvals) and masks (masking).
One Gateway serves every connection of a `wardgate serve` process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from wardgate.config import Config
from wardgate.identity.registry import IdentityRegistry
from wardgate.metrics import METRICS, count_masked
from wardgate.pipeline.command import Command, Decision, SessionInfo, Verdict
from wardgate.policy.constants import without_constants
from wardgate.policy.masked_columns import ruled_column_read

if TYPE_CHECKING:
    from wardgate.audit.store import AuditStore

__all__ = ["Gateway", "format_ttl", "statement_key"]

log = logging.getLogger("wardgate.gateway")


# PostgreSQL's DETAIL texts that echo a row's or a key's values (constraint failures)
_ROW_ECHO = re.compile(r"(failing row contains|\bkey \(.*\)=\()", re.IGNORECASE | re.DOTALL)
ROW_DETAIL_WITHHELD = "wardgate: detail withheld (it shows row values; a column mask rule applies)"
# an error or notice of a statement that reads a column under a column rule: its texts
# may quote the value (a failed cast, a function's RAISE); the SQLSTATE stays
MESSAGE_WITHHELD = (
    "wardgate: message withheld: the statement reads {column}, a column under a mask rule, "
    "and the message may quote its value"
)
# the free-text fields of ErrorResponse / NoticeResponse besides the message: detail,
# hint, context (where), internal query
_ERROR_TEXTS = ("D", "H", "W", "q")


def statement_key(text: str) -> str:
    """What a standing grant (`approve --for`) is keyed on: the statement with its constants
    replaced by placeholders, as PostgreSQL's own normalizer does it. Not the pglast
    fingerprint, which also ignores schema and role names."""
    try:
        from pglast.parser import normalize

        normalized = normalize(text)
    except Exception:
        normalized = text
    return hashlib.sha256(normalized.encode()).hexdigest()


_PER_DECISION_MAX = 1024
# masked statement texts kept for the next statement with the same text and mask set (a
# prepared statement, an ORM's fixed text with $n parameters): masking is a pure function
# of both, so the record is the same; bounded in entries and in text length
_MASKED_MAX = 4096
_MASKED_TEXT_MAX = 2048
_json_str = json.encoder.encode_basestring  # type: ignore[attr-defined]


class _DecisionConstants:
    """The parts of a command event that depend on the Decision only (the policy hands
    out the same Decision object for every statement of one normalized form)."""

    __slots__ = ("decision", "masks", "mask_set", "meta", "verdict", "column_rules", "covers")

    def __init__(self, decision: Decision, masks: tuple, mask_set: int) -> None:
        self.decision = decision  # held, so that its id is not reused while cached
        self.masks = masks
        # column rules change how bound parameters are masked (Gateway.masked_parameters)
        self.column_rules = any(getattr(m, "columns", ()) for m in masks)
        facts = decision.facts or {}
        # the statement names a covered column, by the parser's names (`U&"d\0069..."`
        # and `EXECUTE x(...)` of a PREPARE that names one included): its constants and
        # bound parameters may carry the column's value
        self.covers = (
            self.column_rules and ruled_column_read(masks, facts.get("objects", [])) is not None
        )
        self.mask_set = mask_set  # a number per distinct `masks` (see Gateway._mask_sets)
        self.verdict = decision.verdict.value
        facts = decision.facts or {}
        self.meta: dict[str, Any] = {
            "reason": decision.reason,
            "kinds": facts.get("kinds", []),
            "objects": facts.get("objects", []),
            "fingerprint": facts.get("fingerprint"),
        }


def _grant_key(text: str, decision: Decision, prepared: str | None) -> str:
    """What a standing grant for one statement covers: its normalized text, unless a
    constant decided its verdict (`x LIKE 'old%'` is not held as `x LIKE '%'` is; both
    normalise to `x LIKE $1`): then that text only. An EXECUTE's arguments are values
    for the PREPARE's parameters and never decide; its PREPARE is keyed exactly."""
    facts = decision.facts or {}
    if decision.cacheable or facts.get("executes") is not None:
        key = statement_key(text)
    else:
        key = hashlib.sha256(b"exact\0" + text.encode()).hexdigest()
    if prepared is not None:
        exact = hashlib.sha256(b"exact\0" + prepared.encode()).hexdigest()
        key = hashlib.sha256((exact + key).encode()).hexdigest()
    return key


def format_ttl(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class Gateway:
    def __init__(
        self, config: Config, store: AuditStore, *, identities: IdentityRegistry | None = None
    ):
        self.config = config
        self.store = store
        self.identities = identities or IdentityRegistry.from_config(config)
        try:
            from wardgate.policy.engine import PolicyEngine, wardgate_setting
        except ImportError:
            from wardgate.pipeline._interim import PermissivePolicy as PolicyEngine
            from wardgate.pipeline._interim import wardgate_setting

        self.policy = PolicyEngine(
            list(config.policies),
            connection_policies={c.name: list(c.policies) for c in config.connections},
            on_unparsed={c.name: c.on_unparsed for c in config.connections},
        )
        self._wardgate_setting = wardgate_setting
        try:
            from wardgate.masking.engine import MaskingConfig, MaskingEngine
        except ImportError:
            from wardgate.pipeline._interim import NoMasking as MaskingEngine

            MaskingConfig = dict
        masking_cfg = config.masking or MaskingConfig()
        token_key = None
        ref = getattr(masking_cfg, "token_key", None)
        if ref:
            from wardgate.secrets import SecretRef

            token_key = SecretRef(ref).resolve().encode() if isinstance(ref, str) else None
        self.masking = MaskingEngine(masking_cfg, token_key=token_key)
        from wardgate.masking.baseline import BASELINE_MASK

        self._baseline_masks = (BASELINE_MASK,)
        self.broker: Any = None  # set by serve() when approvals run
        from wardgate.engines.postgres.catalog import CatalogCache

        self.catalogs = CatalogCache()
        # id(decision) -> what its events share (decisions are memoised by the policy)
        self._per_decision: dict[int, _DecisionConstants] = {}
        # distinct mask directive tuples -> a small number (the config bounds them), and
        # (statement text, that number) -> the text masked for the record
        self._mask_sets: dict[tuple, int] = {}
        self._masked_texts: dict[tuple[str, int], str] = {}
        # command events from the event loop: a future of the loop resolved with the
        # event's seq, by the writer, with one loop callback per group commit (no
        # concurrent Future, no cross-thread wake-up per event); result events with no
        # future and no reply at all (nobody waits for them). Elsewhere (no running
        # loop): `submit`.
        self._submit_seq = getattr(store, "submit_seq", None)
        self._submit_nowait = getattr(store, "submit_nowait", None)
        # the store makes a result event wait for the next command's group commit itself:
        # the relay hands it over as soon as the statement ends (see responses._finish)
        self.results_wait_in_store = bool(getattr(store, "nowait_waits_for_company", False))

    # ------------------------------------------------------------------ policy

    def policy_session(self, info: SessionInfo) -> Any:
        return self.policy.session(info)

    def wardgate_setting(self, sql: str) -> tuple[str, str] | None:
        if "wardgate" not in sql.lower():
            return None
        return self._wardgate_setting(sql)

    # ------------------------------------------------------------------ audit

    def record(
        self,
        kind: str,
        info: SessionInfo | None,
        *,
        verdict: str | None = None,
        rule: str | None = None,
        meta: dict | None = None,
        payload: bytes | None = None,
    ) -> Any:
        """Queue an event; returns a concurrent Future (or None if the store refused at once)."""
        try:
            return self.store.submit(
                kind,
                session=info.session_id if info else None,
                identity=info.identity if info else None,
                connection=info.connection if info else None,
                verdict=verdict,
                rule=rule,
                meta=meta or {},
                payload=payload,
            )
        except Exception as exc:  # the caller treats a failed future as store failure
            import concurrent.futures

            fut: concurrent.futures.Future = concurrent.futures.Future()
            fut.set_exception(exc)
            return fut

    def _record_hot(
        self, info: SessionInfo, verdict: str, rule: str | None, meta: dict, payload: bytes
    ) -> Any:
        """`record` for a command event: on a running event loop a loop future resolved
        with the event's seq (check `.done()` before `.result()`), else a concurrent
        Future resolved with its record."""
        submit_seq = self._submit_seq
        if submit_seq is None or asyncio._get_running_loop() is None:
            return self.record(
                "command", info, verdict=verdict, rule=rule, meta=meta, payload=payload
            )
        try:
            return submit_seq(
                "command", info.session_id, info.identity, info.connection, verdict, rule,
                meta, payload,
            )  # fmt: skip
        except Exception as exc:  # the caller treats a failed future as store failure
            fut: concurrent.futures.Future = concurrent.futures.Future()
            fut.set_exception(exc)
            return fut

    def _masks_for(self, decision: Decision | None) -> tuple:
        # the baseline (cards, emails, SSNs, IBANs, secrets) applies to every identity;
        # mask rules add to it, never replace it
        if decision is not None and decision.masks:
            return self._baseline_masks + tuple(decision.masks)
        return self._baseline_masks

    def mask_text(self, text: str, decision: Decision | None = None) -> str:
        if not text:
            return text
        masked, _counts = self.masking.mask_text(text, self._masks_for(decision))
        return masked

    def _constants(self, decision: Decision) -> _DecisionConstants:
        """What every event of one (memoised) Decision shares, computed once."""
        entry = self._per_decision.get(id(decision))
        if entry is not None and entry.decision is decision:
            return entry
        if len(self._per_decision) >= _PER_DECISION_MAX:
            self._per_decision.clear()
        masks = self._masks_for(decision)
        mask_set = self._mask_sets.setdefault(masks, len(self._mask_sets))
        entry = self._per_decision[id(decision)] = _DecisionConstants(decision, masks, mask_set)
        return entry

    def _masked_statement(self, text: str, c: _DecisionConstants) -> str:
        """The statement text masked for the record, remembered per text and mask set."""
        # EXECUTE name(...) names no column: its arguments go to what the name was
        # prepared as, which the decision's facts say (the same text can be prepared
        # as another statement later: part of the key)
        key = (text, c.mask_set, c.covers)
        masked = self._masked_texts.get(key)
        if masked is None:
            if c.column_rules and (c.covers or self.masking.names_covered_column(text, c.masks)):
                # the statement may carry a covered column's value in any literal
                # spelling: the record keeps it with every constant replaced
                text_out = without_constants(text) or text
            else:
                text_out = text
            masked = self.masking.mask_text(text_out, c.masks)[0]
            if len(text) <= _MASKED_TEXT_MAX:
                if len(self._masked_texts) >= _MASKED_MAX:
                    self._masked_texts.clear()
                self._masked_texts[key] = masked
        return masked

    def record_command(self, command: Command, decision: Decision, **extra: Any) -> Any:
        c = self._constants(decision)
        session = command.session
        METRICS.statements[(session.connection, c.verdict)] += 1
        if c.verdict != "allow":
            METRICS.refusals[(session.connection, c.verdict, decision.rule or "")] += 1
        # the statement text and its parameters are masked for the record, always
        text = self._masked_statement(command.text, c) if command.text else command.text
        if command.parameters and c.column_rules:
            masked = self.masking.mask_parameters(
                command.parameters, c.masks, command.text, covered=c.covers
            )[0]
            params = ", ".join(["null" if p is None else _json_str(p) for p in masked])
            payload = f'{{"text": {_json_str(text)}, "parameters": [{params}]}}'
        elif command.parameters:
            masks = c.masks
            mask_text = self.masking.mask_text
            # json.dumps(params, ensure_ascii=False) spelled out: the same text, without
            # an encoder pass per statement
            params = ", ".join(
                [
                    "null" if p is None else _json_str(mask_text(p, masks)[0])
                    for p in command.parameters
                ]
            )
            payload = f'{{"text": {_json_str(text)}, "parameters": [{params}]}}'
        else:
            payload = f'{{"text": {_json_str(text)}, "parameters": []}}'
        meta = c.meta.copy()
        meta["index"] = command.index
        meta["via"] = command.via
        if session.reason:
            meta["justification"] = session.reason
        if session.application_name:
            meta["application_name"] = session.application_name
        if extra:
            meta.update(extra)
        return self._record_hot(session, c.verdict, decision.rule, meta, payload.encode())

    def record_result(
        self, info: SessionInfo, ex: Any, *, tag: str | None, error: dict | None, rows: int | None
    ) -> None:
        fut = ex.seq_future
        try:  # a loop future (a seq) or a concurrent one (a record): check done() first
            done = fut.result() if fut.done() else None
            command_seq = done if type(done) is int else done.seq
        except Exception:
            command_seq = None
        rec = ex.recorder
        meta = rec.meta()
        meta["command_seq"] = command_seq
        meta["tag"] = tag
        meta["rows"] = rows
        meta["error"] = error
        if ex.masker is not None:
            meta["masking"] = summary = ex.masker.summary()
            count_masked(info.connection, summary)
        nowait = self._submit_nowait
        if nowait is None or asyncio._get_running_loop() is None:
            self.record("result", info, meta=meta, payload=rec.payload())
            return
        # nobody waits for a result event (the response already left): no future, no
        # reply. A store that fails to write it logs that; one whose writer process is
        # down keeps it for the next (and refuses every statement after it)
        try:
            kept = nowait(
                "result", info.session_id, info.identity, info.connection, None, None, meta,
                rec.payload(),
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - as a failed write: said, not raised
            log.exception("a result event could not be queued")
            kept = False
        if kept is False:
            METRICS.audit_failures[()] += 1

    # ------------------------------------------------------------------ masking

    def result_masker(
        self,
        decision: Decision | None,
        fields: list,
        formats: list[int],
        connection: str | None = None,
    ) -> Any:
        """The masker for one result, or None when nothing can apply (rows pass as is)."""
        return self.result_plan(decision, fields, formats, connection)[0]

    def result_plan(
        self,
        decision: Decision | None,
        fields: list,
        formats: list[int] | tuple[int, ...],
        connection: str | None = None,
    ) -> tuple[Any, bool]:
        """`(masker, reusable)`: the masker for one result, or None when nothing can apply
        (rows pass as is). `reusable` is True when the same decision, columns, formats and
        catalog map give the same answer again: no masker (a masker counts what it masked,
        per result) and every column's source known.

        Column rules follow the SOURCE column: a result column taken straight from a table
        is resolved through the target's catalog (table OID and attribute number from the
        RowDescription), so an alias (`ssn AS name`) does not get around `*.ssn`. A column
        whose source is unknown, or computed by an expression, in a statement that READS a
        column under a column rule is masked as that column (fail closed):
        `encode(ssn::bytea, 'hex')` does not get around a rule on `*.ssn` either.
        """
        from wardgate.masking.engine import ColumnInfo

        masks = self._masks_for(decision)
        objects = (decision.facts or {}).get("objects", []) if decision is not None else []
        tables = [o[6:] for o in objects if o.startswith("table:")]
        table = tables[0] if len(tables) == 1 else None
        derived_as = ruled_column_read(masks, objects)
        catalog = self.catalogs.get(connection) if connection else None
        columns = []
        reusable = True
        for i, f in enumerate(fields):
            fmt = formats[i] if i < len(formats) else 0
            source = (
                catalog.get((f.table_oid, f.column_attnum)) if catalog and f.table_oid else None
            )
            if source is not None:
                columns.append(ColumnInfo(source[2], f"{source[0]}.{source[1]}", f.type_oid, fmt))
                continue
            if f.table_oid and catalog is not None and connection:
                self.catalogs.mark_stale(connection)  # a table newer than the map
                reusable = False
            if derived_as is not None:
                # no table ("" for an unqualified column over several tables): matched by
                # any rule on the column name (fail closed)
                columns.append(ColumnInfo(derived_as[1], derived_as[0] or None, f.type_oid, fmt))
            elif f.table_oid:
                columns.append(ColumnInfo(f.name, table, f.type_oid, fmt))
            else:
                columns.append(ColumnInfo(f.name, None, f.type_oid, fmt))
        masker = self.masking.plan(masks, columns)
        return masker, reusable and masker is None

    def mask_unplanned_row(self, body: bytes) -> bytes:
        from wardgate.wire.pg.backend import decode_data_row
        from wardgate.wire.pg.writers import data_row

        values = decode_data_row(body)
        changed = False
        out: list[bytes | None] = []
        for v in values:
            if v is None:
                out.append(None)
                continue
            text = bytes(v).decode("utf-8", "replace")
            masked = self.mask_text(text)
            changed |= masked != text
            out.append(masked.encode())
        if not changed:
            return body
        return data_row(out)[5:]

    def mask_copy_data(self, data: bytes, decision: Decision | None) -> bytes:
        """One COPY TO STDOUT data message (text or CSV), masked by content."""
        text = data.decode("utf-8", "replace")
        masked = self.mask_text(text, decision)
        return data if masked == text else masked.encode()

    def copy_refusal(self, decision: Decision | None, *, binary: bool) -> str | None:
        """Why COPY TO output cannot be masked, or None. Fail closed: binary COPY cannot be
        scanned, and COPY carries no column names for column rules to match."""
        masks = self._masks_for(decision)
        if binary and masks:
            return "wardgate: binary COPY output cannot be masked; use FORMAT text or csv"
        if any(getattr(m, "columns", ()) for m in masks):
            return (
                "wardgate: COPY output cannot be masked by column rules; "
                "use SELECT, or COPY without the masked columns"
            )
        return None

    def mask_error(
        self,
        raw: bytes,
        body: bytes,
        *,
        notice: bool = False,
        decision: Decision | None = None,
    ) -> bytes:
        """ErrorResponse / NoticeResponse with values echoed by PostgreSQL masked."""
        return self.masked_error(raw, body, notice=notice, decision=decision)[0]

    def masked_error(
        self,
        raw: bytes,
        body: bytes,
        *,
        notice: bool = False,
        decision: Decision | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """ErrorResponse / NoticeResponse with values echoed by PostgreSQL masked: the
        message to send and its fields as sent (what the record keeps).

        Raised by a statement that reads a column under a column rule, the texts are
        withheld whole: PostgreSQL quotes the value that failed in any field and any
        spelling (`invalid input syntax for type integer: "..."`, a JSON parser's
        CONTEXT line, a function's RAISE), with no column name to match a rule with.
        Otherwise a DETAIL that echoes row values ("Failing row contains (...)",
        "Key (...)=(...)") is withheld when a column rule may apply (the statement's,
        or unknown), and every text is masked by the statement's masks."""
        from wardgate.wire.pg.backend import decode_fields
        from wardgate.wire.pg.writers import error_response, notice_response

        fields = decode_fields(body)
        changed = False
        masks = self._masks_for(decision)
        objects = (decision.facts or {}).get("objects", []) if decision is not None else []
        read = ruled_column_read(masks, objects) if objects else None
        if read is not None:
            column = f"{read[0] + '.' if read[0] else ''}{read[1]}"
            fields["M"] = MESSAGE_WITHHELD.format(column=column)
            for key in _ERROR_TEXTS:
                fields.pop(key, None)
            changed = True
        else:
            detail = fields.get("D")
            if detail and _ROW_ECHO.search(detail):
                if decision is None or any(getattr(m, "columns", None) for m in masks):
                    fields["D"] = ROW_DETAIL_WITHHELD
                    changed = True
            for key in ("M", *_ERROR_TEXTS):
                if key in fields:
                    masked = self.mask_text(fields[key], decision)
                    if masked != fields[key]:
                        fields[key] = masked
                        changed = True
        if not changed:
            return raw, fields
        build = notice_response if notice else error_response
        out = dict(fields)
        severity = out.pop("S", "ERROR")
        code = out.pop("C", "XX000")
        message = out.pop("M", "")
        return build(severity, code, message, fields=out), fields

    def mask_notification(self, raw: bytes, body: bytes) -> bytes:
        from wardgate.wire.pg.backend import decode_notification_response as decode_notification
        from wardgate.wire.pg.writers import notification_response

        n = decode_notification(body)
        masked = self.mask_text(n.payload)
        if masked == n.payload:
            return raw
        return notification_response(n.pid, n.channel, masked)

    # ------------------------------------------------------------------ approvals

    async def review(
        self, relay: Any, decisions: list[tuple[Command, Decision]], notice: Any
    ) -> tuple[bool, str | None, dict]:
        """Hold a statement for a human. Returns (approved, refusal message, evidence)."""
        decision = max((d for _, d in decisions), key=lambda d: d.verdict is Verdict.REVIEW)
        command = next(c for c, d in decisions if d is decision)
        info = relay.info
        command = Command(info, command.text, command.parameters, command.index, command.via)
        # `EXECUTE name(...)` alone does not say what runs: the reviewer is shown the
        # PREPARE too, and a standing grant covers the pair (a grant for `EXECUTE x`
        # must not cover whatever x is prepared as later)
        policy = getattr(relay, "policy", None)

        def prepared_of(d: Decision) -> str | None:
            if policy is None or not hasattr(policy, "prepared_text"):
                return None
            return policy.prepared_text((d.facts or {}).get("executes"))

        # the approval is for the whole message: every statement of it runs on one
        # approval, so the reviewer sees them all and a grant covers that message only
        # (`DELETE FROM logs; DELETE FROM accounts` ran on an approval, or a grant, of
        # `DELETE FROM logs`)
        fingerprint = _grant_key(command.text, decision, prepared_of(decision))
        if len(decisions) > 1:
            keys = "\n".join(_grant_key(c.text, d, prepared_of(d)) for c, d in decisions)
            fingerprint = hashlib.sha256(keys.encode()).hexdigest()
            required = max(d.approvals_required for _, d in decisions)
            if required != decision.approvals_required:
                decision = replace(decision, approvals_required=required)
        context = getattr(policy, "search_path_context", "")
        if isinstance(context, str) and context:
            # the same text names other tables under another search_path
            fingerprint = hashlib.sha256(f"{fingerprint}\0{context}".encode()).hexdigest()
        ttl = decision.review_ttl_seconds or self.config.approvals.default_ttl
        if self.broker is None:
            return (
                False,
                f'wardgate: rule "{decision.rule}" needs an approval and approvals are not running',
                {},
            )
        grant = self.broker.active_grant(info.identity, info.connection, fingerprint)
        if grant is not None:
            return True, None, {"grant": getattr(grant, "id", None), "approved_by_grant": True}
        # the reviewer sees what will run: the text and, for an Execute, the values Bind
        # gave it, both masked as the record masks them
        params = self.masking.mask_parameters(
            command.parameters,
            self._masks_for(decision),
            command.text,
            covered=self._constants(decision).covers,
        )[0]
        shown: list[str] = []
        for c, d in decisions if len(decisions) > 1 else [(command, decision)]:
            text = self._masked_statement(c.text, self._constants(d))
            prepared = prepared_of(d)
            if prepared is not None:
                text += f"\n-- prepared as: {self._masked_statement(prepared, self._constants(d))}"
            shown.append(text)
        masked = Command(info, ";\n".join(shown), params, command.index, command.via)
        approval = await self.broker.request(masked, decision, fingerprint=fingerprint)
        notice(
            f'wardgate: approval {approval.id} requested (rule "{decision.rule}"), '
            f"waiting up to {format_ttl(ttl)}"
        )
        started = time.monotonic()
        outcome = await self.broker.wait(approval.id, ttl)
        evidence = {
            "approval_id": approval.id,
            "waited_seconds": round(time.monotonic() - started, 3),
        }
        if outcome.approved:
            evidence["approved_by"] = list(outcome.reviewers)
            return True, None, evidence
        if outcome.timed_out:
            return (
                False,
                f"wardgate: approval {approval.id} timed out after {format_ttl(ttl)}",
                evidence,
            )
        who = ", ".join(outcome.reviewers) or "a reviewer"
        return (
            False,
            f'wardgate: approval {approval.id} denied by {who} (rule "{decision.rule}"): '
            f"{outcome.reason or 'no reason given'}",
            evidence,
        )
