"""The masking engine: configuration, directive resolution, plans and text masking.

Theory of operation: a `MaskingEngine` is built once from the `masking:` section
of the configuration (custom entities, phone detection, default strategies and
the token key the lead resolves from its secret reference). For each result the
PostgreSQL engine calls `plan(directives, columns)` with the decision's
`MaskDirective`s and the RowDescription; the engine resolves the directives
(which entities, with which strategy; which columns under which rule) into a
`ResultMasker`, or returns None when nothing can apply, so rows are forwarded
untouched. Compiled scanners and prepared replacers are cached per entity set,
so planning a small result costs microseconds.

Resolution rules (docs/masking.md):
- a directive with entities scans every column for them; a directive with
  columns masks those columns whole; one with neither means the baseline
  entities; `*` (or `ALL`) means every enabled entity;
- strategy `"default"` takes `default_strategy[entity]`, else `redact`;
- several directives on one entity or column: the strongest strategy wins
  (redact > token > hash > partial); an unknown entity or strategy, or `token`
  without a key, raises `MaskingError` (fail closed).

`mask_text` masks notices, errors, notification payloads, statement text and
parameters: entity scans, plus, where column rules apply, the values PostgreSQL
echoes next to column names (`Key (ssn)=(123456789) already exists`, `Failing
row contains (...)`) and the string literals of a statement that names a
covered column.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wardgate.masking.baseline import BASELINE_ENTITIES, DEFAULT_STRATEGY
from wardgate.masking.masker import (
    SKIP,
    ColumnInfo,
    MaskingError,
    ResultMasker,
    rule_mode,
    scan_mode,
)
from wardgate.masking.recognizers import (
    BUILTIN_ENTITIES,
    Recognizer,
    builtin_recognizers,
    custom_recognizer,
)
from wardgate.masking.scanner import Scanner
from wardgate.masking.strategies import STRATEGIES, STRATEGY_STRENGTH, replacer
from wardgate.pipeline.command import MaskDirective

__all__ = [
    "ColumnInfo",
    "CustomEntity",
    "MaskingConfig",
    "MaskingEngine",
    "MaskingError",
    "ResultMasker",
    "column_pattern_matches",
]

Strategy = Literal["redact", "partial", "token", "hash"]


class CustomEntity(BaseModel):
    """A config-defined entity: a regex with an optional validator, or a word list."""

    model_config = ConfigDict(extra="forbid")
    name: str
    regex: str | None = None
    validator: Literal["luhn", "iban", "none"] = "none"
    words: list[str] = Field(default_factory=list)
    ignore_case: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", v):
            raise ValueError("entity names are upper case: [A-Z][A-Z0-9_]*")
        if v in BUILTIN_ENTITIES:
            raise ValueError(f"{v} is a built-in entity")
        return v

    def recognizer(self) -> Recognizer:
        return custom_recognizer(
            self.name,
            regex=self.regex,
            validator=self.validator,
            words=self.words,
            ignore_case=self.ignore_case,
        )


class MaskingConfig(BaseModel):
    """The `masking:` configuration section."""

    model_config = ConfigDict(extra="forbid")
    # secret reference (env:NAME, file:PATH); the lead resolves it to the raw key
    token_key: str | None = None
    # PHONE_NUMBER and IP_ADDRESS join `*` only when enabled (directives may name them)
    phone: bool = False
    ip: bool = True
    custom: list[CustomEntity] = Field(default_factory=list)
    default_strategy: dict[str, Strategy] = Field(
        default_factory=lambda: {"CREDIT_CARD": "partial"}
    )


def column_pattern_matches(pattern: str, col: ColumnInfo) -> bool:
    """`email`, `*.ssn`, `customers.email`, `public.customers.email` (globs, any case).

    A pattern with a table part also matches a column whose table is unknown
    (an expression, a view the lead could not resolve): fail closed.
    """
    pattern = pattern.lower()
    table_pat, _, col_pat = pattern.rpartition(".")
    if not fnmatch.fnmatchcase(col.name.lower(), col_pat):
        return False
    if not table_pat or table_pat == "*" or col.table is None:
        return True
    table = col.table.lower()
    if "." not in table:
        # a table named without its schema (by the statement, not the catalog): it may
        # be the pattern's `schema.table` through the search_path (fail closed)
        table_pat = table_pat.rpartition(".")[2]
    return fnmatch.fnmatchcase(table, table_pat) or fnmatch.fnmatchcase(
        table.rpartition(".")[2], table_pat
    )


class MaskingEngine:
    """Builds `ResultMasker`s from directives; masks free text."""

    def __init__(self, config: MaskingConfig, *, token_key: bytes | None = None) -> None:
        self.config = config
        self._token_key = token_key
        self._custom = {c.name: c.recognizer() for c in config.custom}
        enabled = [
            e
            for e in BUILTIN_ENTITIES
            if (e != "PHONE_NUMBER" or config.phone) and (e != "IP_ADDRESS" or config.ip)
        ]
        self._all_entities = tuple(enabled) + tuple(self._custom)
        self._scanners: dict[frozenset[str], Scanner] = {}
        self._replacers: dict[tuple[str | None, str], object] = {}
        self._resolved: dict[tuple[MaskDirective, ...], tuple] = {}

    # -- resolution -------------------------------------------------------------

    def _strategy(self, entity: str | None, strategy: str) -> str:
        if strategy == DEFAULT_STRATEGY:
            strategy = self.config.default_strategy.get(entity or "", "redact")
        if strategy not in STRATEGY_STRENGTH:
            raise MaskingError(f"unknown masking strategy {strategy!r} ({', '.join(STRATEGIES)})")
        if strategy == "token" and not self._token_key:
            raise MaskingError("the token strategy needs masking.token_key")
        return strategy

    def _resolve(self, directives: Sequence[MaskDirective]) -> tuple:
        key = tuple(directives)
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        entities: dict[str, str] = {}
        columns: list[tuple[str, str, str]] = []  # pattern, strategy, rule
        for d in directives:
            names = d.entities or (() if d.columns else BASELINE_ENTITIES)
            expanded: list[str] = []
            for name in names:
                if name in ("*", "ALL"):
                    expanded.extend(self._all_entities)
                elif name in BUILTIN_ENTITIES or name in self._custom:
                    expanded.append(name)
                else:
                    raise MaskingError(f"rule {d.rule}: unknown entity {name!r}")
            for entity in expanded:
                s = self._strategy(entity, d.strategy)
                old = entities.get(entity)
                if old is None or STRATEGY_STRENGTH[s] > STRATEGY_STRENGTH[old]:
                    entities[entity] = s
            for pattern in d.columns:
                columns.append((pattern, self._strategy(None, d.strategy), d.rule))
        described = [
            {
                "rule": d.rule,
                "entities": list(d.entities),
                "columns": list(d.columns),
                "strategy": d.strategy,
            }
            for d in directives
        ]
        resolved = (entities, columns, described)
        if len(self._resolved) > 256:
            self._resolved.clear()
        self._resolved[key] = resolved
        return resolved

    def _scanner(self, entities: Sequence[str]) -> Scanner | None:
        if not entities:
            return None
        key = frozenset(entities)
        scanner = self._scanners.get(key)
        if scanner is None:
            recs: list[Recognizer] = []
            for e in BUILTIN_ENTITIES:  # fixed order: secrets first
                if e in key:
                    recs.extend(builtin_recognizers(e))
            recs.extend(self._custom[e] for e in self._custom if e in key)
            scanner = self._scanners[key] = Scanner(recs)
        return scanner

    def _replacer(self, entity: str | None, strategy: str):
        fn = self._replacers.get((entity, strategy))
        if fn is None:
            try:
                fn = replacer(entity, strategy, self._token_key)
            except ValueError as exc:
                raise MaskingError(str(exc)) from None
            self._replacers[(entity, strategy)] = fn
        return fn

    # -- plans ---------------------------------------------------------------------

    def plan(
        self, directives: Sequence[MaskDirective], columns: Sequence[ColumnInfo]
    ) -> ResultMasker | None:
        """The masker for one result, or None when no directive can apply to it."""
        if not directives:
            return None
        entities, column_rules, described = self._resolve(directives)
        rules = []
        ruled: set[int] = set()
        for i, col in enumerate(columns):
            best: tuple[str, str] | None = None
            for pattern, strategy, rule in column_rules:
                if column_pattern_matches(pattern, col) and (
                    best is None or STRATEGY_STRENGTH[strategy] > STRATEGY_STRENGTH[best[0]]
                ):
                    best = (strategy, rule)
            if best is not None:
                rules.append((i, rule_mode(col), self._replacer(None, best[0]), best[1], best[0]))
                ruled.add(i)
        custom = any(e in self._custom for e in entities)
        scanner = self._scanner(list(entities))
        modes = [
            SKIP if (i in ruled or scanner is None) else scan_mode(col, custom=custom)
            for i, col in enumerate(columns)
        ]
        if not rules and all(m == SKIP for m in modes):
            return None
        replacers = {e: self._replacer(e, s) for e, s in entities.items()}
        args = {
            "scanner": scanner,
            "replacers": replacers,
            "rules": rules,
            "scan_modes": modes,
            "rule_descriptions": described,
        }
        masker = ResultMasker(columns, **args)
        if masker.wants_number_gate:  # binary numbers and no C masker
            masker = ResultMasker(columns, number_gate=True, **args)
        return masker

    # -- free text -------------------------------------------------------------------

    def mask_text(
        self, text: str, directives: Sequence[MaskDirective]
    ) -> tuple[str, dict[str, int]]:
        """Mask a notice/error/notification text, a statement or a parameter.

        Returns the masked text and the count of findings per entity (column-rule
        echoes count as `COLUMN_RULE`).
        """
        if not directives or not text:
            return text, {}
        try:
            return self._mask_text(text, directives)
        except MaskingError:
            raise
        except Exception as exc:
            raise MaskingError(f"masking failed ({type(exc).__name__})") from None

    def _mask_text(
        self, text: str, directives: Sequence[MaskDirective]
    ) -> tuple[str, dict[str, int]]:
        entities, column_rules, _ = self._resolve(directives)
        data = text.encode("utf-8", "surrogatepass")
        counts: dict[str, int] = {}
        if column_rules:
            data = _mask_column_echoes(data, column_rules, counts, self._replacer)
        scanner = self._scanner(list(entities))
        if scanner is not None:
            found = scanner.spans(data)
            if found:
                pieces = []
                last = 0
                for entity, s, e in found:
                    pieces.append(data[last:s])
                    pieces.append(self._replacer(entity, entities[entity])(data[s:e]))
                    counts[entity] = counts.get(entity, 0) + 1
                    last = e
                pieces.append(data[last:])
                data = b"".join(pieces)
        return data.decode("utf-8", "surrogatepass"), counts

    def names_covered_column(self, statement: str, directives: Sequence[MaskDirective]) -> bool:
        """Does `statement` name a column some column rule of `directives` covers?
        (By its words, so a false yes is possible and a false no is not.)"""
        if not directives:
            return False
        _entities, column_rules, _ = self._resolve(directives)
        return bool(column_rules) and _names_covered_column(statement, column_rules)

    def mask_parameters(
        self,
        parameters: Sequence[str | None],
        directives: Sequence[MaskDirective],
        statement: str = "",
        *,
        covered: bool = False,
    ) -> tuple[tuple[str | None, ...], dict[str, int]]:
        """Mask bound parameters for the record.

        Entity scans apply to each; if a column rule covers a column the statement
        names (by its words, or `covered`: the caller knows from the parsed statement),
        every parameter is redacted whole (a parameter's column is unknown here: fail
        closed).
        """
        if not directives:
            return tuple(parameters), {}
        _entities, column_rules, _ = self._resolve(directives)
        if column_rules and (covered or _names_covered_column(statement, column_rules)):
            n = sum(1 for p in parameters if p is not None)
            masked = tuple(None if p is None else "[REDACTED]" for p in parameters)
            return masked, ({"COLUMN_RULE": n} if n else {})
        out: list[str | None] = []
        total: dict[str, int] = {}
        for p in parameters:
            if p is None:
                out.append(None)
                continue
            m, c = self.mask_text(p, directives)
            out.append(m)
            for k, v in c.items():
                total[k] = total.get(k, 0) + v
        return tuple(out), total


_KEY_ECHO = re.compile(rb"\(([^()\x00]{1,512})\)=\(((?:[^()\x00]|\([^()\x00]*\)){0,4096})\)")
_FAILING_ROW = re.compile(rb"(Failing row contains )\(([^\x00]*)\)")
_STRING_LITERAL = re.compile(rb"'(?:[^'\x00]|'')*'")
_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_$]*")


def _bare_column(pattern: str) -> str:
    return pattern.rpartition(".")[2].lower()


def _names_covered_column(statement: str, column_rules: list[tuple[str, str, str]]) -> bool:
    if not statement:
        return True  # unknown statement: assume it may touch a covered column
    words = {w.lower() for w in _IDENT.findall(statement.encode("utf-8", "surrogatepass"))}
    return any(
        fnmatch.fnmatchcase(w.decode("utf-8", "replace"), _bare_column(p))
        for p, _s, _r in column_rules
        for w in words
    )


def _mask_column_echoes(data: bytes, column_rules, counts: dict[str, int], get_replacer) -> bytes:
    """Mask values PostgreSQL echoes next to covered column names, and literals."""
    patterns = [(_bare_column(p), s) for p, s, _r in column_rules]

    def strategy_for(name: str) -> str | None:
        best = None
        for pat, s in patterns:
            if fnmatch.fnmatchcase(name, pat) and (
                best is None or STRATEGY_STRENGTH[s] > STRATEGY_STRENGTH[best]
            ):
                best = s
        return best

    def key_echo(m: re.Match[bytes]) -> bytes:
        names = [
            n.strip().strip(b'"').lower().decode("utf-8", "replace") for n in m.group(1).split(b",")
        ]
        strategies = [strategy_for(n) for n in names]
        if not any(strategies):
            return m.group(0)
        values = m.group(2).split(b", ")
        if len(values) != len(names):  # cannot pair them up: mask the whole tuple
            counts["COLUMN_RULE"] = counts.get("COLUMN_RULE", 0) + 1
            return b"(" + m.group(1) + b")=([REDACTED])"
        out = []
        for v, s in zip(values, strategies, strict=True):
            if s is None:
                out.append(v)
            else:
                counts["COLUMN_RULE"] = counts.get("COLUMN_RULE", 0) + 1
                out.append(get_replacer(None, s)(v))
        return b"(" + m.group(1) + b")=(" + b", ".join(out) + b")"

    data = _KEY_ECHO.sub(key_echo, data)

    def failing_row(m: re.Match[bytes]) -> bytes:
        counts["COLUMN_RULE"] = counts.get("COLUMN_RULE", 0) + 1
        return m.group(1) + b"([REDACTED])"

    data = _FAILING_ROW.sub(failing_row, data)
    if _names_covered_column(data.decode("utf-8", "surrogatepass"), column_rules):

        def literal(m: re.Match[bytes]) -> bytes:
            counts["COLUMN_RULE"] = counts.get("COLUMN_RULE", 0) + 1
            return b"'[REDACTED]'"

        data = _STRING_LITERAL.sub(literal, data)
    return data
