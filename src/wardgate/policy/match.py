"""Compiled rules: does a rule match a statement's facts in a session?

Theory of operation: a `CompiledRule` splits a rule's conditions in two. Session
conditions (identity, group, connection, protocol) are checked once when a session
starts (`applies_to`), so the per-statement check (`matches`) only looks at the facts
(kinds, features, objects, properties), the clock and, if the rule asks for it, the text.
Identifiers are compared case-sensitively with shell-style globs, exactly as the parser
folded them. An unqualified table is taken as `public.<name>` unless the session changed
its search_path, after which it matches any schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from wardgate.pipeline.command import SessionInfo
from wardgate.policy.facts import StatementFacts
from wardgate.policy.model import MatchSpec, ObjectsSpec, RuleSpec, TimeWindow

__all__ = ["CompiledMatch", "CompiledRule", "MatchContext"]

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(slots=True)
class MatchContext:
    """Per-statement inputs beyond the facts."""

    text: str
    now: datetime
    search_path_changed: bool = False


def _any_glob(value: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def _split(pattern: str) -> tuple[str | None, str]:
    if "." in pattern:
        head, tail = pattern.rsplit(".", 1)
        return head, tail
    return None, pattern


def _in_window(now: datetime, window: TimeWindow) -> bool:
    local = now.astimezone(ZoneInfo(window.tz))
    if _DAY_NAMES[local.weekday()] not in window.days:
        return False
    t = local.time().replace(tzinfo=None)
    if window.start <= window.end:
        return window.start <= t <= window.end
    return t >= window.start or t <= window.end  # overnight window


def _objects_match(
    spec: ObjectsSpec, facts: StatementFacts, ctx: MatchContext, narrow: bool = False
) -> bool:
    """`narrow`: the match lets a statement through (an allow rule, or the `unless` of a
    deny/review/mask rule). After a search_path change an unqualified name may be in any
    schema: it then matches every schema for a rule that restricts, and only a pattern
    for every schema (`*.t`) for one that lets through (`public.*` must not admit `pay`
    when `SET search_path = hr` made it `hr.pay`)."""

    def _name_glob(value: str, pattern: str) -> bool:
        # "*" in the facts is a name only known at run time (schema_to_xml('hr') reads
        # every table of hr, database_to_xml() every table): it may be any name
        if value == "*":
            return not narrow or pattern == "*"
        return fnmatchcase(value, pattern)

    def schema_ok(schema: str | None, pattern: str | None) -> bool:
        if pattern is None:
            return True
        if schema is None:
            if ctx.search_path_changed:
                return not narrow or pattern == "*"
            return fnmatchcase("public", pattern)
        return _name_glob(schema, pattern)

    if spec.schemas:
        schemas = set(facts.schemas)
        if any(s is None for s, _ in facts.tables) and not (ctx.search_path_changed and narrow):
            schemas.add("public")
        if any(_name_glob(s, p) for s in schemas for p in spec.schemas):
            return True
        if ctx.search_path_changed and not narrow and any(s is None for s, _ in facts.tables):
            return True
    for pattern in spec.tables:
        pschema, pname = _split(pattern)
        for schema, name in facts.tables:
            if _name_glob(name, pname) and schema_ok(schema, pschema):
                return True
    for pattern in spec.columns:
        ptable, pcol = _split(pattern)
        if ptable is not None:
            ptable = ptable.rsplit(".", 1)[-1]
        table_names = {name for _, name in facts.tables}
        for table, column in facts.columns:
            if column != "*" and not fnmatchcase(column, pcol):
                continue
            if ptable is None:
                return True
            if table is not None:
                if _name_glob(table, ptable):
                    return True
            elif any(_name_glob(t, ptable) for t in table_names):
                return True
    for pattern in spec.functions:
        pschema, pname = _split(pattern)
        for schema, name in facts.functions:
            if fnmatchcase(name, pname) and (
                pschema is None or schema is None or fnmatchcase(schema, pschema)
            ):
                return True
    return False


class CompiledMatch:
    """A MatchSpec prepared for fast checks."""

    __slots__ = (
        "spec",
        "kinds",
        "features",
        "regex",
    )

    def __init__(self, spec: MatchSpec) -> None:
        self.spec = spec
        self.kinds = frozenset(spec.kinds) if spec.kinds is not None else None
        self.features = frozenset(spec.features) if spec.features is not None else None
        self.regex = re.compile(spec.text_regex) if spec.text_regex else None

    @property
    def uses_text(self) -> bool:
        return self.regex is not None

    @property
    def uses_time(self) -> bool:
        return self.spec.time_windows is not None or self.spec.outside_time_windows is not None

    def applies_to(self, info: SessionInfo) -> bool:
        s = self.spec
        if s.identities is not None and not _any_glob(info.identity, s.identities):
            return False
        if s.groups is not None and not any(_any_glob(g, s.groups) for g in info.groups):
            return False
        if s.connections is not None and not _any_glob(info.connection, s.connections):
            return False
        return s.protocols is None or _any_glob(info.protocol, s.protocols)

    def matches(self, facts: StatementFacts, ctx: MatchContext, narrow: bool = False) -> bool:
        s = self.spec
        if self.kinds is not None and self.kinds.isdisjoint(facts.kinds):
            return False
        if self.features is not None and self.features.isdisjoint(facts.features):
            return False
        if s.writes is not None and facts.writes != s.writes:
            return False
        if s.reads is not None and facts.reads != s.reads:
            return False
        if s.without_where is not None and facts.without_where != s.without_where:
            return False
        if s.objects is not None and not _objects_match(s.objects, facts, ctx, narrow):
            return False
        if s.time_windows is not None and not any(_in_window(ctx.now, w) for w in s.time_windows):
            return False
        if s.outside_time_windows is not None and any(
            _in_window(ctx.now, w) for w in s.outside_time_windows
        ):
            return False
        return self.regex is None or self.regex.search(ctx.text) is not None


class CompiledRule:
    """One rule of one policy, named `<policy>/<rule>`."""

    __slots__ = ("policy", "spec", "name", "match", "unless", "order")

    def __init__(self, policy: str, spec: RuleSpec, order: int) -> None:
        self.policy = policy
        self.spec = spec
        self.name = f"{policy}/{spec.name}"
        self.match = CompiledMatch(spec)
        self.unless = CompiledMatch(spec.unless) if spec.unless is not None else None
        self.order = order

    @property
    def uses_text(self) -> bool:
        return self.match.uses_text or (self.unless is not None and self.unless.uses_text)

    @property
    def uses_time(self) -> bool:
        return self.match.uses_time or (self.unless is not None and self.unless.uses_time)

    def applies_to(self, info: SessionInfo) -> bool:
        return self.match.applies_to(info)

    def matches(self, facts: StatementFacts, ctx: MatchContext, info: SessionInfo) -> bool:
        # an allow rule matching, or a restricting rule's `unless` matching, lets a
        # statement through: those read unknown schemas narrowly (see _objects_match)
        lets_through = self.spec.verdict == "allow"
        if not self.match.matches(facts, ctx, lets_through):
            return False
        if self.unless is not None and self.unless.applies_to(info):
            return not self.unless.matches(facts, ctx, not lets_through)
        return True
