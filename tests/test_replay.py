"""`wardgate replay`'s timeline, read from a real store: joins, order, streaming."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from rich.console import Console

from wardgate.audit.store import AuditStore
from wardgate.replay import _MAX_PENDING, load_timeline, render_timeline

SESSION = "0193a5c0-0000-7000-8000-000000000001"
OTHER = "0193a5c0-0000-7000-8000-000000000002"


def _command(store: AuditStore, text: str, session: str = SESSION) -> int:
    payload = json.dumps({"text": text, "parameters": []}).encode()
    ev = store.append_sync(
        "command", session=session, identity="ci", connection="pg", verdict="allow",
        rule="baseline/allow", payload=payload,
    )  # fmt: skip
    return ev.seq


def _result(store: AuditStore, command_seq: int, rows: list[list[str]], session: str = SESSION):
    lines = [json.dumps({"columns": ["a"]})] + [json.dumps(r) for r in rows]
    store.append_sync(
        "result", session=session, identity="ci", connection="pg",
        meta={"command_seq": command_seq, "tag": f"SELECT {len(rows)}", "rows": len(rows)},
        payload="\n".join(lines).encode(),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path):
    s = AuditStore.open(tmp_path / "audit.db")
    yield s
    s.close()


def test_pipelined_commands_are_joined_with_their_results_in_log_order(store: AuditStore) -> None:
    store.append_sync("session_start", session=SESSION, identity="ci", connection="pg")
    a = _command(store, "SELECT 1")
    b = _command(store, "SELECT 2")  # pipelined: two commands before either result
    _result(store, a, [["1"]])
    _result(store, b, [["2"], ["3"]])
    c = _command(store, "SELECT 4")  # its result never came (session killed)
    store.append_sync("session_end", session=SESSION, identity="ci", connection="pg")
    _command(store, "SELECT 'other session'", session=OTHER)

    timeline = load_timeline(store, SESSION[:30])
    assert timeline is not None and timeline.identity == "ci"
    assert inspect.isgenerator(timeline.items)  # streamed, not loaded whole
    items = list(timeline.items)
    assert [i["kind"] for i in items] == [
        "session_start", "command", "command", "command", "session_end",
    ]  # fmt: skip
    assert [i.get("text") for i in items[1:4]] == ["SELECT 1", "SELECT 2", "SELECT 4"]
    assert items[1]["result"]["row_values"] == [["1"]]
    assert items[2]["result"]["row_values"] == [["2"], ["3"]]
    assert "result" not in items[3] and items[3]["seq"] == c


def test_max_rows_caps_what_is_loaded(store: AuditStore) -> None:
    a = _command(store, "SELECT a FROM t")
    _result(store, a, [[str(i)] for i in range(50)])
    timeline = load_timeline(store, SESSION, max_rows=5)
    assert timeline is not None
    (item,) = list(timeline.items)
    assert item["result"]["rows"] == 50
    assert item["result"]["row_values"] == [[str(i)] for i in range(5)]
    console = Console(record=True, width=120)
    render_timeline(console, load_timeline(store, SESSION), max_rows=5)
    out = console.export_text()
    assert "45 more rows" in out and "SELECT a FROM t" in out


def test_a_command_without_result_does_not_hold_back_the_rest(store: AuditStore) -> None:
    lost = _command(store, "SELECT 'never answered'")
    seqs = [_command(store, f"SELECT {i}") for i in range(_MAX_PENDING + 5)]
    for seq in seqs:
        _result(store, seq, [["x"]])
    gen = load_timeline(store, SESSION).items
    first = next(gen)
    assert first["seq"] == lost and "result" not in first
    rest = list(gen)
    assert sum(1 for i in rest if i["kind"] == "command") == len(seqs)
    # commands past the pending bound went out before their result arrived; their
    # results then show as items of their own, nothing is lost
    joined = sum(1 for i in rest if "result" in i)
    alone = sum(1 for i in rest if i["kind"] == "result")
    assert joined + alone == len(seqs)
    assert alone <= 5  # only those pushed out by the bound, no cascade


def test_unknown_session(store: AuditStore) -> None:
    _command(store, "SELECT 1")
    assert load_timeline(store, "nope") is None


def test_sessions_are_found_by_prefix_from_their_session_start(store: AuditStore) -> None:
    for sid in (SESSION, OTHER):
        store.append_sync("session_start", session=sid, identity="ci", connection="pg")
        _command(store, f"SELECT '{sid}'", session=sid)
    assert store.session_ids("0193a5c0", limit=5) == [SESSION, OTHER]
    assert store.session_ids(SESSION) == [SESSION]
    timeline = load_timeline(store, SESSION[:-1] + "1")
    assert timeline is not None and timeline.session == SESSION
    assert load_timeline(store, "0193a5c0") is None  # ambiguous
    assert load_timeline(store, OTHER[:30]) is None  # two share the first 30 characters
    assert load_timeline(store, "ffff") is None  # unknown: found without a scan
    assert load_timeline(store, OTHER) is not None
