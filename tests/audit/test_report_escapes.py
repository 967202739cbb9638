"""The evidence report shows what agents sent without obeying it.

A denied statement carrying a cursor-up/erase-line sequence and a bidi override is in
the report's table of denied statements: report.md (read with `cat` as often as in a
viewer) and report.html (a browser applies U+202E) hold them as visible escapes. A
bundle written before, with them raw, still verifies.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from tests.audit.test_evidence_fixtures import ORIGIN, build_store
from wardgate.audit import evidence
from wardgate.audit.bundle_zip import read_zip
from wardgate.audit.checkpoint import Checkpointer
from wardgate.audit.evidence import export_bundle, verify_bundle
from wardgate.audit.report import render_html, render_markdown

TEXT = "DROP TABLE users /* \x1b[1A\x1b[2K */ -- \u202eelbat on"


@pytest.fixture
def world(tmp_path: Path):
    store, ring = build_store(tmp_path)
    store.append_sync(
        "command", session="s9", identity="ci-deployer", connection="prod", verdict="deny",
        rule="no-ddl", payload=json.dumps({"text": TEXT, "parameters": []}).encode(),
        meta={"reason": "DDL is not allowed", "kinds": ["drop"]},
    )  # fmt: skip
    Checkpointer(store, ring, ORIGIN).checkpoint_now()
    yield store, ring, tmp_path
    store.close()


def _members(path: Path) -> dict[str, bytes]:
    return {m.name: m.data for m in read_zip(path.read_bytes())}


def test_report_escapes_agent_text(world) -> None:
    store, ring, tmp = world
    out = tmp / "b.zip"
    export_bundle(store, ring, ORIGIN, out, {"verdict": "deny"})
    files = _members(out)
    for name in ("report.md", "report.html"):
        text = files[name].decode()
        assert "\x1b" not in text and "\u202e" not in text, name
        assert "\\x1b[1A\\x1b[2K" in text and "\\u202eelbat on" in text, name
    assert verify_bundle(out).ok


def test_a_bundle_with_the_earlier_raw_report_still_verifies(world, monkeypatch) -> None:
    store, ring, tmp = world
    monkeypatch.setattr(
        evidence, "render_markdown", functools.partial(render_markdown, legacy=True)
    )
    monkeypatch.setattr(evidence, "render_html", functools.partial(render_html, legacy=True))
    out = tmp / "old.zip"
    export_bundle(store, ring, ORIGIN, out, {"verdict": "deny"})
    assert "\x1b[2K" in _members(out)["report.md"].decode()
    monkeypatch.undo()
    rep = verify_bundle(out)
    assert rep.ok, rep.failures
