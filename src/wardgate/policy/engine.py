"""The policy engine: statements in, one Decision per statement out.

Theory of operation:
- `PolicyEngine` validates the policies at construction (unknown policy names, include
  cycles, a user policy called `baseline`, bad `on_unparsed`) and owns the shared
  classification caches. `PolicyEngine.session(info)` starts a `PolicySession` for one
  agent connection with the rules that apply to its identity, groups, connection and
  protocol already selected.
- `PolicySession.evaluate(text)` classifies the message (see classify.py), merges in
  session state (EXECUTE of a PREPAREd name takes the prepared statement's facts; a call
  of a function created earlier in the session takes its body's facts), then decides
  each statement.
- Combination: every matching rule of every policy of the connection is collected; the
  most restrictive verdict wins (deny > review > allow; `mask` counts as allow); the
  first matching rule, in config order, with the winning verdict names the decision;
  mask directives accumulate from all matching mask rules; a review needs the largest
  `approvals` of the matching review rules. A policy with `default: deny|review` adds
  that verdict (rule `<policy>/<default>`) when none of its rules matched. When nothing
  matches at all: allow, rule `<default>`.
- Caches: an exact-text LRU of classifications (always safe: same text, same tree), then
  an LRU keyed by the parser's normalized text (pg_query_normalize: constants replaced by
  $n, everything else verbatim) holding facts that did not depend on any constant. The
  pglast fingerprint alone is NOT a safe key: it ignores schema names and role names
  (`s.t` and `t` share one). Rule matching itself is not cached (it is a few
  microseconds) so time windows and session state are always current.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from pglast.parser import ParseError, normalize

from wardgate.pipeline.command import Command, Decision, MaskDirective, SessionInfo, Verdict
from wardgate.policy.baseline import BASELINE_NAME, baseline_policy
from wardgate.policy.classify import classify_message
from wardgate.policy.facts import StatementFacts
from wardgate.policy.masked_columns import ruled_column_read, ruled_rename
from wardgate.policy.match import CompiledRule, MatchContext
from wardgate.policy.model import PolicySpec, parse_duration
from wardgate.policy.settings import wardgate_setting

__all__ = ["PolicyEngine", "PolicySession", "PolicyConfigError", "wardgate_setting"]

DEFAULT_POLICIES = [BASELINE_NAME]
DEFAULT_TTL_SECONDS = 600.0
_RANK = {Verdict.ALLOW: 0, Verdict.REVIEW: 1, Verdict.DENY: 2}
# Kinds whose facts may be reused for statements that differ only in constants.
_NORMALIZED_CACHE_KINDS = frozenset({"select", "values", "insert", "update", "delete", "merge"})
_MAX_CACHED_TEXT = 8192  # longer messages are classified every time (bounded memory)
_MEMO_SIZE = 4096
# Named objects one session may hold, each tracked here (and by the PostgreSQL relay for
# protocol-level statements) for as long as the session lasts: ~3 KiB per SQL PREPARE.
MAX_SESSION_OBJECTS = 10000


class PolicyConfigError(ValueError):
    """The policies or their references in the config are inconsistent."""


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[str, object] = OrderedDict()

    def get(self, key: str) -> object | None:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key: str, value: object) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        if len(self.data) > self.size:
            self.data.popitem(last=False)


Classified = list[tuple[str, StatementFacts]]


class PolicyEngine:
    def __init__(
        self,
        policies: list[PolicySpec],
        *,
        connection_policies: dict[str, list[str]] | None = None,
        on_unparsed: dict[str, str] | None = None,
        cache_size: int = 10_000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.specs: dict[str, PolicySpec] = {BASELINE_NAME: baseline_policy()}
        for spec in policies:
            if spec.name == BASELINE_NAME:
                raise PolicyConfigError(
                    f"policy name {BASELINE_NAME!r} is built in; include it instead"
                )
            if spec.name in self.specs:
                raise PolicyConfigError(f"policy {spec.name!r} is defined twice")
            self.specs[spec.name] = spec
        self.rules: dict[str, list[CompiledRule]] = {
            name: self._expand(name, ()) for name in self.specs
        }
        self.connection_policies = dict(connection_policies or {})
        for conn, names in self.connection_policies.items():
            for name in names:
                if name not in self.specs:
                    known = ", ".join(sorted(self.specs))
                    raise PolicyConfigError(
                        f"connection {conn!r} names unknown policy {name!r} (known: {known})"
                    )
        self.on_unparsed = dict(on_unparsed or {})
        for conn, value in self.on_unparsed.items():
            if value not in ("deny", "review"):
                raise PolicyConfigError(
                    f"connection {conn!r}: on_unparsed must be deny or review, not {value!r}"
                )
        self.clock = clock or (lambda: datetime.now(UTC))
        self._text_cache = _LRU(cache_size)
        self._normalized_cache = _LRU(cache_size)
        self.stats = {"text_hits": 0, "normalized_hits": 0, "misses": 0}

    def _expand(self, name: str, stack: tuple[str, ...]) -> list[CompiledRule]:
        if name in stack:
            raise PolicyConfigError("policy include cycle: " + " -> ".join((*stack, name)))
        spec = self.specs.get(name)
        if spec is None:
            where = f" (included by {stack[-1]!r})" if stack else ""
            raise PolicyConfigError(f"unknown policy {name!r}{where}")
        out = [CompiledRule(name, rule, i) for i, rule in enumerate(spec.rules)]
        for included in spec.include:
            for rule in self._expand(included, (*stack, name)):
                if all(r.name != rule.name for r in out):
                    out.append(rule)
        return out

    def policies_for(self, connection: str) -> list[str]:
        return self.connection_policies.get(connection, DEFAULT_POLICIES)

    def session(self, info: SessionInfo) -> PolicySession:
        names = self.policies_for(info.connection)
        return PolicySession(self, info, names, self.on_unparsed.get(info.connection, "deny"))

    def classify(self, text: str) -> Classified:
        """Classify a message, through the caches. Raises ParseError / RecursionError."""
        if len(text) > _MAX_CACHED_TEXT:
            self.stats["misses"] += 1
            return classify_message(text)
        hit = self._text_cache.get(text)
        if hit is not None:
            self.stats["text_hits"] += 1
            return hit  # type: ignore[return-value]
        try:
            key: str | None = normalize(text)
        except ParseError:
            key = None
        if key is not None:
            facts = self._normalized_cache.get(key)
            if facts is not None:
                self.stats["normalized_hits"] += 1
                result: Classified = [(text, facts)]  # type: ignore[list-item]
                self._text_cache.put(text, result)
                return result
        self.stats["misses"] += 1
        result = classify_message(text)
        self._text_cache.put(text, result)
        if key is not None and len(result) == 1:
            facts = result[0][1]
            if (
                not facts.constant_sensitive
                and facts.kinds
                and facts.kinds <= _NORMALIZED_CACHE_KINDS
                and not facts.features
            ):
                self._normalized_cache.put(key, facts)
        return result


# functions that keep a value past the statement, where it can be read back without the
# statement's columns (see the masked-column-copy check in PolicyEngine.decide)
_STORING_FUNCTIONS = frozenset(
    {
        "set_config",
        "pg_notify",
        "setval",
        "lo_from_bytea",
        "lo_put",
        "lo_create",
        "lo_import",
        "lo_export",
        "pg_logical_emit_message",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
    }
)


class PolicySession:
    """Policy state of one agent connection."""

    def __init__(
        self, engine: PolicyEngine, info: SessionInfo, policies: list[str], on_unparsed: str
    ) -> None:
        self.engine = engine
        self.info = info
        self.policies = list(policies)
        self.on_unparsed = Verdict(on_unparsed)
        seen: set[str] = set()
        self.rules: list[CompiledRule] = []
        self.policy_rules: dict[str, set[str]] = {}
        for policy in policies:
            names = set()
            for rule in engine.rules[policy]:
                if rule.spec.verdict != "mask":  # mask rules do not decide
                    names.add(rule.name)
                if rule.name not in seen and rule.applies_to(info):
                    seen.add(rule.name)
                    self.rules.append(rule)
            self.policy_rules[policy] = names
        self.uses_text = any(r.uses_text for r in self.rules)
        # a decision of this session can change with the clock: one made at Parse is
        # checked again at each Execute (see the PostgreSQL relay)
        self.uses_time = any(r.uses_time for r in self.rules)
        # decisions may be memoised per classified statement unless the clock or the
        # text play a part
        self._memo_ok = not self.uses_text and not any(r.uses_time for r in self.rules)
        self._memo: dict[tuple[int, bool], tuple[StatementFacts, Decision]] = {}
        self.prepared: dict[str, StatementFacts] = {}
        # PREPAREd name -> the PREPARE statement's text: what a reviewer of `EXECUTE name`
        # is shown, and what a standing grant for it is keyed on (see prepared_text)
        self.prepared_texts: dict[str, str] = {}
        # names the target may hold with a statement the gateway does not know (a
        # PREPARE it may have refused): a PREPARE of one is not taken as what runs
        self.uncertain: set[str] = set()
        self.all_uncertain = False
        self._freed: set[str] = set()
        # DECLAREd cursor name -> (its query's facts, WITH HOLD)
        self.cursors: dict[str, tuple[StatementFacts, bool]] = {}
        self.functions: dict[str, StatementFacts] = {}
        self.search_path_changed = False
        # where unqualified names resolve, when not public: the target's schemas at
        # set-up, or this session after a SET (see Gateway.review: a standing grant
        # for `DELETE FROM pay ...` must not cover another schema's pay)
        self.search_path_context = ""

    # -- evaluate ------------------------------------------------------------------
    def evaluate(
        self, text: str, *, via: str = "simple", parameters: tuple[str | None, ...] = ()
    ) -> list[tuple[Command, Decision]]:
        try:
            classified = self.engine.classify(text)
        except ParseError as exc:
            return [(self._command(text, 0, via, parameters), self._unparsed(str(exc)))]
        except RecursionError:
            return [
                (
                    self._command(text, 0, via, parameters),
                    self._unparsed("statement nested too deeply"),
                )
            ]
        out = []
        self._freed = set()
        for index, (stmt_text, facts) in enumerate(classified):
            command = self._command(stmt_text, index, via, parameters)
            effective, problem = self._with_session_state(facts)
            if facts.prepares is not None and facts.prepares in self.prepared:
                self.prepared_texts[facts.prepares] = stmt_text
            if problem is not None:
                decision = problem
            elif effective is facts and self._memo_ok:
                key = (id(facts), self.search_path_changed)
                memo = self._memo.get(key)
                if memo is not None and memo[0] is facts:
                    decision = memo[1]
                else:
                    decision = self.decide(facts, stmt_text)
                    if len(self._memo) >= _MEMO_SIZE:
                        self._memo.clear()
                    self._memo[key] = (facts, decision)
            else:
                decision = self.decide(effective, stmt_text)
            out.append((command, decision))
        return out

    def protocol_statement(self, name: str, text: str | None) -> tuple | None:
        """A protocol Parse (`text`) or Close (None) of statement `name`: SQL PREPARE and
        protocol Parse share one namespace on the server, so `EXECUTE name` runs what
        the protocol made it. A name the session knows from PREPARE that is closed
        through the protocol is forgotten; one parsed again (the server had dropped it
        where the gateway could not see) is decided as what was parsed. Returns an undo
        record for `undo_protocol` (the target may refuse or skip the message)."""
        if not name or name not in self.prepared:
            return None
        before = (self.prepared.pop(name, None), self.prepared_texts.pop(name, None))
        if text is not None:
            try:
                classified = self.engine.classify(text)
            except (ParseError, RecursionError):
                classified = None  # unknown: EXECUTE of it is refused
            if classified is not None:
                merged = StatementFacts()
                for _, facts in classified:
                    merged.merge(facts)
                self.prepared[name] = merged
                self.prepared_texts[name] = text
        return ("pS", name, before, self.prepared.get(name))

    def protocol_portal(self, name: str, text: str | None) -> tuple | None:
        """A protocol Bind of portal `name` to a statement (`text`), or a Close (None):
        SQL cursors are portals, so a later `FETCH name` reads what the protocol bound
        under the name, not what a DECLARE of it once read. Returns an undo record."""
        if not name or name not in self.cursors:
            return None
        before = self.cursors.pop(name)
        if text is not None:
            try:
                classified = self.engine.classify(text)
            except (ParseError, RecursionError):
                classified = None  # unknown cursor: read as every column
            if classified is not None:
                merged = StatementFacts()
                for _, facts in classified:
                    merged.merge(facts)
                    if facts.executes is not None:  # a statement PREPAREd in SQL, bound
                        prepared = self.prepared.get(facts.executes)
                        if prepared is not None:
                            merged.merge(prepared)
                        else:
                            merged.columns.add((None, "*"))
                self.cursors[name] = (merged, False)
        return ("pP", name, before, self.cursors.get(name))

    def undo_protocol(self, record: tuple) -> None:
        """The target refused (or skipped after an error) the Parse, Bind or Close that
        made `record`: the name means what it meant before, unless it was given to
        another statement or cursor since. Kept, `PREPARE p AS DELETE ...` followed by a
        Parse of p the target refused (42P05) made `EXECUTE p` decided as the Parse's
        statement while the DELETE ran."""
        kind, name, before, after = record
        if kind == "pS":
            if self.prepared.get(name) is not after:
                return
            self.prepared.pop(name, None)
            self.prepared_texts.pop(name, None)
            facts, text = before
            if facts is not None:
                self.prepared[name] = facts
                if text is not None:
                    self.prepared_texts[name] = text
        elif kind == "pP":
            if self.cursors.get(name) is not after:
                return
            self.cursors.pop(name, None)
            if before is not None:
                self.cursors[name] = before

    def _uncertain(self, name: str) -> None:
        if len(self.uncertain) >= MAX_SESSION_OBJECTS:
            self.all_uncertain = True
            self.uncertain.clear()
        elif not self.all_uncertain:
            self.uncertain.add(name)

    def statement_failed(self, facts: dict | None) -> None:
        """A statement the target refused or did not run (an error, skipped after one,
        refused or not approved by the gateway). A PREPARE or DECLARE of it did not
        happen: the target may still hold an older statement or cursor under the name
        (`PREPARE p AS DELETE ...` then `PREPARE p AS SELECT 1`, refused 42P05: `EXECUTE
        p` ran the DELETE decided as SELECT 1). The name is unknown from here."""
        if not facts:
            return
        name = facts.get("prepares")
        if isinstance(name, str):
            self.prepared.pop(name, None)
            self.prepared_texts.pop(name, None)
            self._uncertain(name)
        cursor = facts.get("declares")
        if isinstance(cursor, str):
            self.cursors.pop(cursor, None)

    def statement_ran(self, facts: dict | None, tag: str) -> None:
        """A statement the target ran: a DEALLOCATE (or DISCARD ALL) makes the names it
        dropped free, so a new PREPARE of them is known again."""
        name = (facts or {}).get("deallocates")
        if name == "*" or tag == "DISCARD ALL":
            self.uncertain.clear()
            self.all_uncertain = False
        elif isinstance(name, str):
            self.uncertain.discard(name)

    def prepared_text(self, name: str | None) -> str | None:
        """The PREPARE that made `name`, while the session holds it (for a review of
        `EXECUTE name`: the EXECUTE's text alone does not say what runs)."""
        if not name or name not in self.prepared:
            return None
        return self.prepared_texts.get(name)

    def _command(self, text: str, index: int, via: str, parameters: tuple) -> Command:
        return Command(session=self.info, text=text, parameters=parameters, index=index, via=via)

    def _unparsed(self, error: str) -> Decision:
        return Decision(
            verdict=self.on_unparsed,
            rule="builtin/unparsed",
            reason=f"statement cannot be parsed: {error}",
            review_ttl_seconds=None,
            facts={"kinds": [], "objects": [], "fingerprint": "", "parse_error": error},
        )

    def _with_session_state(self, facts: StatementFacts) -> tuple[StatementFacts, Decision | None]:
        effective = facts
        full = _session_full(facts.prepares, self.prepared, "prepared statements")
        full = full or _session_full(facts.declares, self.cursors, "cursors")
        if full is not None:
            return facts, Decision(
                verdict=Verdict.DENY,
                rule=f"gateway/too-many-{full.replace(' ', '-')}",
                reason=f"more than {MAX_SESSION_OBJECTS} {full} in one session; close some first",
                facts=facts.as_dict(),
            )
        if facts.executes is not None:
            prepared = self.prepared.get(facts.executes)
            if prepared is None:
                return facts, Decision(
                    verdict=Verdict.DENY,
                    rule="builtin/unknown-prepared-statement",
                    reason=f"EXECUTE of prepared statement {facts.executes!r} that this session "
                    "did not PREPARE through the gateway",
                    facts=facts.as_dict(),
                )
            effective = facts.copy()
            effective.merge(prepared)
        if facts.fetches is not None:
            # FETCH names only the cursor: it reads what the cursor's query reads (its
            # rows are masked by those columns). A cursor not declared through the
            # gateway (opened by a function, say) may read any column: fail closed.
            if effective is facts:
                effective = facts.copy()
            cursor = self.cursors.get(facts.fetches)
            if cursor is not None:
                effective.merge(cursor[0])
            else:
                effective.columns.add((None, "*"))
                effective.add_feature(
                    "unknown_cursor",
                    f"fetches from cursor {facts.fetches!r} not declared through the gateway",
                )
        if self.functions and facts.functions:
            for _, name in facts.functions:
                body = self.functions.get(name)
                if body is not None:
                    if effective is facts:
                        effective = facts.copy()
                    effective.merge(body)
                    effective.add_feature(
                        "session_function", f"calls {name}() created in this session"
                    )
        # remember what this statement does to the session
        if (
            (effective.touches_prepared or "dynamic_sql" in effective.features)
            and facts.prepares is None
            and facts.deallocates is None
        ):
            # a DO block or function that PREPAREs or DEALLOCATEs (or dynamic SQL that
            # may): the names the session knew may run something else now. All become
            # unknown (EXECUTE of them is refused until PREPAREd again through the
            # gateway); the relay forgets its protocol statements too (`forgets_prepared`)
            self.prepared.clear()
            self.prepared_texts.clear()
            self.all_uncertain = True  # the target may hold any name now
            if effective is facts:
                effective = facts.copy()
            effective.touches_prepared = True
            effective.forgets_prepared = True
        if facts.prepares is not None and facts.prepared_facts is not None:
            name = facts.prepares
            freed = self._freed  # by a DEALLOCATE earlier in this message
            if name in self.prepared or (
                (name in self.uncertain or self.all_uncertain)
                and name not in freed
                and "*" not in freed
            ):
                # the target refuses a PREPARE of a name it holds and keeps what it
                # holds; the gateway cannot tell whether it does: unknown until a
                # DEALLOCATE of it is seen to run (see statement_failed)
                self.prepared.pop(name, None)
                self.prepared_texts.pop(name, None)
                self._uncertain(name)
            else:
                self.prepared[name] = facts.prepared_facts
        if facts.deallocates is not None:
            # the rest of a message runs only if this did (an error skips it): a name
            # this frees is free for a PREPARE later in the same message
            self._freed.add(facts.deallocates)
        if facts.deallocates == "*":
            self.prepared.clear()
        elif facts.deallocates is not None:
            self.prepared.pop(facts.deallocates, None)
        if facts.declares is not None and facts.cursor_facts is not None:
            self.cursors[facts.declares] = (facts.cursor_facts, facts.cursor_holds)
        if facts.closes_cursor == "*":
            self.cursors.clear()
        elif facts.closes_cursor is not None:
            self.cursors.pop(facts.closes_cursor, None)
        if facts.ends_transaction and self.cursors:
            self.cursors = {k: v for k, v in self.cursors.items() if v[1]}
        if facts.creates_function and facts.function_body is not None:
            self.functions[facts.creates_function] = facts.function_body
        if "search_path" in facts.features:
            self.search_path_changed = True
            self.search_path_context = f"changed in session {self.info.session_id}"
        return effective, None

    # -- decide --------------------------------------------------------------------
    def decide(self, facts: StatementFacts, text: str) -> Decision:
        ctx = MatchContext(
            text=text, now=self.engine.clock(), search_path_changed=self.search_path_changed
        )
        matched = [r for r in self.rules if r.matches(facts, ctx, self.info)]
        verdicts: list[tuple[Verdict, str, str, CompiledRule | None]] = []
        for rule in matched:
            v = Verdict.ALLOW if rule.spec.verdict == "mask" else Verdict(rule.spec.verdict)
            verdicts.append((v, rule.name, rule.spec.reason or "", rule))
        matched_names = {r.name for r in matched}
        for policy in self.policies:
            spec = self.engine.specs[policy]
            if spec.default != "allow" and not (self.policy_rules[policy] & matched_names):
                verdicts.append(
                    (Verdict(spec.default), f"{policy}/<default>", f"{policy} default", None)
                )
        fact_dict = facts.as_dict()
        fact_dict["matched"] = [r.name for r in matched]
        cacheable = not facts.constant_sensitive and not self.uses_text
        masks = tuple(
            MaskDirective(
                rule=r.name,
                entities=tuple(r.spec.mask.entities),
                columns=tuple(r.spec.mask.columns),
                strategy=r.spec.mask.strategy,
            )
            for r in matched
            if r.spec.verdict == "mask" and r.spec.mask is not None
        )
        if not verdicts:
            return Decision(
                verdict=Verdict.ALLOW,
                rule="<default>",
                reason="no rule matched",
                facts=fact_dict,
                cacheable=cacheable,
            )
        top = max(_RANK[v] for v, *_ in verdicts)
        winners = [w for w in verdicts if _RANK[w[0]] == top]
        # an explicit allow rule names an allow decision before a mask rule does
        if winners[0][0] is Verdict.ALLOW:
            explicit = [w for w in winners if w[3] is not None and w[3].spec.verdict == "allow"]
            winners = explicit or winners
        verdict, name, reason, rule = winners[0]
        reason = reason or (rule.spec.verdict if rule else verdict.value)
        if facts.notes and verdict is not Verdict.ALLOW:
            reason = f"{reason} ({'; '.join(facts.notes[:4])})"
        ttl = None
        approvals = 1
        if verdict is Verdict.REVIEW:
            # None: the gateway's approvals.default_ttl applies
            if rule is not None and rule.spec.review is not None and rule.spec.review.ttl:
                ttl = parse_duration(rule.spec.review.ttl)
            approvals = max(
                (w[3].spec.review.approvals for w in winners if w[3] and w[3].spec.review),
                default=1,
            )
        refusal = None if verdict is Verdict.DENY else _column_rule_refusal(facts, fact_dict, masks)
        if refusal is not None:
            return Decision(
                verdict=Verdict.DENY,
                rule=refusal[0],
                reason=refusal[1],
                masks=masks,
                facts=fact_dict,
                cacheable=cacheable,
            )
        return Decision(
            verdict=verdict,
            rule=name,
            reason=reason,
            review_ttl_seconds=ttl,
            approvals_required=approvals,
            masks=masks,
            facts=fact_dict,
            cacheable=cacheable,
        )


def _column_rule_refusal(
    facts: StatementFacts, fact_dict: dict, masks: tuple
) -> tuple[str, str] | None:
    """(rule, reason) when a statement not already denied would move a column under a
    column rule out from under it; None otherwise."""

    def named(hit: tuple[str, str]) -> str:
        return f"{hit[0] + '.' if hit[0] else ''}{hit[1]}"

    objects = fact_dict.get("objects", [])
    # UPDATE t SET other = ruled_column
    copied = [f"column:{t + '.' if t else ''}{c}" for t, c in facts.copied]
    hit = ruled_column_read(masks, copied) if copied else None
    if hit is not None:
        return "builtin/masked-column-copy", (
            f"copies {named(hit)}, a column under a mask rule, into another column"
        )
    # a value handed to one of these outlives the statement where the agent can read it
    # back unmasked (current_setting, a NOTIFY payload, currval, a large object,
    # pg_locks): reading a covered column in the same statement is a copy
    stores = sorted({n.lower() for _, n in facts.functions} & _STORING_FUNCTIONS)
    if stores:
        hit = ruled_column_read(masks, objects)
        if hit is not None:
            return "builtin/masked-column-copy", (
                f"copies {named(hit)}, a column under a mask rule, out of the result "
                f"through {stores[0]}()"
            )
    # a trigger function sees the row of whatever table a trigger names later: NEW.ssn /
    # OLD.ssn may carry a ruled column anywhere (a NOTICE, another table); so does a
    # rule's action (CREATE RULE ... DO ALSO INSERT INTO other VALUES (NEW.ssn))
    made = facts.kinds & {"create_function", "create_rule"}
    if made:
        rows = [o for o in objects if o.lower().startswith(("column:new.", "column:old."))]
        hit = ruled_column_read(masks, rows) if rows else None
        if hit is not None:
            what = "a trigger function" if "create_function" in made else "a rule"
            return "builtin/masked-column-copy", (
                f"{what} that uses NEW/OLD.{hit[1]}, a column under a mask rule, "
                "could carry its value out from under the rule"
            )
    # renaming a ruled column (or its table) would leave the rule matching nothing:
    # `SELECT dx FROM cw` after `RENAME COLUMN ssn TO dx` reads it raw
    if "rename" in facts.kinds:
        hit = ruled_rename(masks, objects)
        if hit is not None:
            return "builtin/masked-column-rename", (
                f"renames {named(hit)}, a column under a mask rule (the rule names it; "
                "change the rule first)"
            )
    # INHERIT, ATTACH PARTITION and SET SCHEMA make a table's rows readable under a name
    # a rule naming the table does not match (`SELECT diagnosis FROM parent`)
    moved = [f"column:{t}.*" for t in facts.moved if t]
    hit = ruled_rename(masks, moved) if moved else None
    if hit is not None:
        return "builtin/masked-column-rename", (
            f"makes {hit[0]}, whose column {hit[1]} is under a mask rule, readable under "
            "another table or schema (the rule names it; change the rule first)"
        )
    # reading a column under a column rule while writing elsewhere would copy the value
    # out from under its rule (INSERT ... SELECT, CREATE TABLE AS, CREATE VIEW)
    if facts.writes and facts.reads:
        hit = ruled_column_read(masks, objects)
        if hit is not None:
            return "builtin/masked-column-copy", (
                f"copies {named(hit)}, a column under a mask rule, into a table or view the "
                "rule does not cover"
            )
    return None


def _session_full(name: str | None, held: dict, what: str) -> str | None:
    """`what` when a statement would add the named object `name` to a session that
    already holds MAX_SESSION_OBJECTS of them."""
    if name is None or name in held or len(held) < MAX_SESSION_OBJECTS:
        return None
    return what
