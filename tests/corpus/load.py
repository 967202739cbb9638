"""Load the bypass corpus (tests/corpus/*.yaml).

Each case: `sql`, `expect` (allow | deny | review), `category`, optional `via`
("simple" default, or "parse" for the extended protocol), optional `setup` (statements
sent earlier in the same session, whose own verdicts do not matter), optional
`runnable: false` (cannot be sent with a plain execute, e.g. COPY ... STDIN).
`load_pairs()` gives plain (sql, expected) pairs; `load_cases()` the full records.
The end-to-end run through the gateway reuses these files; `schema.sql` creates the
tables the statements refer to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

__all__ = ["CorpusCase", "CORPUS_DIR", "SCHEMA_SQL", "load_cases", "load_pairs"]

CORPUS_DIR = Path(__file__).resolve().parent
SCHEMA_SQL = CORPUS_DIR / "schema.sql"
_FILES = ("blocked.yaml", "allowed.yaml")


@dataclass(frozen=True)
class CorpusCase:
    sql: str
    expect: str
    category: str
    source: str
    via: str = "simple"
    setup: tuple[str, ...] = field(default_factory=tuple)
    runnable: bool = True

    @property
    def id(self) -> str:
        return f"{self.source}:{self.category}:{self.sql[:60]}"


def load_cases(which: str | None = None) -> list[CorpusCase]:
    """All cases, or those of one file ("blocked" or "allowed")."""
    out: list[CorpusCase] = []
    for name in _FILES:
        if which is not None and not name.startswith(which):
            continue
        doc = yaml.safe_load((CORPUS_DIR / name).read_text(encoding="utf-8"))
        for raw in doc["cases"]:
            out.append(
                CorpusCase(
                    sql=raw["sql"],
                    expect=raw["expect"],
                    category=raw.get("category", ""),
                    source=name.removesuffix(".yaml"),
                    via=raw.get("via", "simple"),
                    setup=tuple(raw.get("setup", ())),
                    runnable=raw.get("runnable", True),
                )
            )
    return out


def load_pairs(which: str | None = None) -> list[tuple[str, str]]:
    """(sql, expected verdict) pairs."""
    return [(c.sql, c.expect) for c in load_cases(which)]
