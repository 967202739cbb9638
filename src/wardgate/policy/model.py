"""The policy schema of the config file (pydantic v2), validated at start.

Theory of operation: the config has a top-level `policies: list[PolicySpec]`; each
connection names the policies that apply to it (absent: `["baseline"]`). A policy is a
named list of rules. A rule has a verdict and match conditions; every condition that is
set must hold (AND), and inside one condition's list any entry may match (OR). `unless`
holds conditions that, when they all match, make the rule not apply (exceptions). See
docs/policies.md for the combination semantics and worked examples.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "PolicySpec",
    "RuleSpec",
    "MatchSpec",
    "ObjectsSpec",
    "TimeWindow",
    "ReviewSpec",
    "MaskSpec",
    "NotifySpec",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_duration(text: str | float | int) -> float:
    """'10m' -> 600.0; '90s', '2h', '1d', '500ms', or a number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"bad duration {text!r}: use e.g. 30s, 10m, 2h, 1d")
    return float(m.group(1)) * _UNITS[m.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectsSpec(_Strict):
    """Objects a statement touches; glob patterns (`*`, `?`), identifiers as the parser folds them."""

    schemas: list[str] = Field(default_factory=list)
    tables: list[str] = Field(default_factory=list)  # "customers", "billing.*", "*.secrets"
    columns: list[str] = Field(default_factory=list)  # "customers.email", "*.ssn", "ssn"
    functions: list[str] = Field(default_factory=list)  # "pg_read_file", "pg_catalog.lo_*"


class TimeWindow(_Strict):
    """A recurring window: days of the week and a start/end time of day in a time zone."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(_DAYS)
    )
    start: time = time(0, 0)
    end: time = time(23, 59, 59, 999999)
    tz: str = "UTC"

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class MatchSpec(_Strict):
    """Conditions; each one that is set must match."""

    identities: list[str] | None = None
    groups: list[str] | None = None
    connections: list[str] | None = None
    protocols: list[str] | None = None
    kinds: list[str] | None = None  # statement kinds anywhere in the statement
    features: list[str] | None = None  # classifier features (see docs/policies.md)
    objects: ObjectsSpec | None = None
    writes: bool | None = None
    reads: bool | None = None
    without_where: bool | None = None
    time_windows: list[TimeWindow] | None = None  # inside any window
    outside_time_windows: list[TimeWindow] | None = None  # inside none of them
    text_regex: str | None = None  # last resort: Python regex searched in the text

    @field_validator("text_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"text_regex does not compile: {exc}") from exc
        return value

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: list[str] | None) -> list[str] | None:
        from wardgate.policy.facts import FEATURES

        for feature in value or ():
            if feature not in FEATURES:
                raise ValueError(f"unknown feature {feature!r}; known: {', '.join(FEATURES)}")
        return value


class ReviewSpec(_Strict):
    ttl: str | None = None  # None: approvals.default_ttl (10m unless configured)
    approvals: int = Field(default=1, ge=1, le=10)

    @field_validator("ttl")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def ttl_seconds(self) -> float | None:
        return parse_duration(self.ttl) if self.ttl else None


class MaskSpec(_Strict):
    entities: list[str] = Field(default_factory=list)  # "EMAIL", "CREDIT_CARD", ...
    columns: list[str] = Field(default_factory=list)  # "customers.email", "*.ssn", "email"
    strategy: Literal["redact", "partial", "token", "hash"] = "redact"


class RuleSpec(MatchSpec):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    verdict: Literal["allow", "deny", "review", "mask"]
    reason: str | None = None  # shown to the agent and recorded
    unless: MatchSpec | None = None
    review: ReviewSpec | None = None
    mask: MaskSpec | None = None

    @model_validator(mode="after")
    def _settings_fit_verdict(self) -> RuleSpec:
        if self.review is not None and self.verdict != "review":
            raise ValueError(f"rule {self.name!r}: 'review' settings need verdict: review")
        if self.verdict == "mask" and (
            self.mask is None or not (self.mask.entities or self.mask.columns)
        ):
            raise ValueError(f"rule {self.name!r}: verdict mask needs mask.entities or columns")
        if self.mask is not None and self.verdict != "mask":
            raise ValueError(f"rule {self.name!r}: 'mask' settings need verdict: mask")
        return self


class NotifySpec(_Strict):
    """Webhook for approval requests and decisions (consumed by the approvals broker)."""

    url: str
    format: Literal["json", "slack"] = "json"
    events: list[Literal["requested", "decided"]] = Field(
        default_factory=lambda: ["requested", "decided"]
    )


class PolicySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str = ""
    include: list[str] = Field(default_factory=list)  # other policies whose rules apply too
    default: Literal["allow", "deny", "review"] = "allow"  # when none of its rules match
    rules: list[RuleSpec] = Field(default_factory=list)
    notify: NotifySpec | None = None

    @model_validator(mode="after")
    def _unique_rule_names(self) -> PolicySpec:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"policy {self.name!r}: duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        return self
