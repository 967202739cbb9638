"""ResultRecorder: the digest covers the DataRows as sent, row by row or as one run."""

from __future__ import annotations

import hashlib
import json

from wardgate.engines.postgres.results import ResultRecorder
from wardgate.wire.pg import writers as w


def _rows(n: int) -> list[bytes]:
    return [w.data_row([str(i).encode(), None, b"v" * (i % 5)]) for i in range(n)]


def test_row_by_row_and_runs_give_the_same_record() -> None:
    rows = _rows(200)
    one = ResultRecorder(budget=300)
    for raw in rows:
        one.add_row(raw, raw[5:])
    two = ResultRecorder(budget=300)
    i = 0
    while not two.truncated:
        two.add_row(rows[i], rows[i][5:])
        i += 1
    two.add_rows(b"".join(rows[i:120]), 120 - i)
    two.add_rows(b"".join(rows[120:]), 80)
    assert one.meta() == two.meta()
    assert one.payload() == two.payload()
    meta = one.meta()
    assert meta["rows_streamed"] == 200
    assert meta["truncated"] is True
    assert meta["total_bytes"] == sum(len(r) - 5 for r in rows)
    assert meta["digest"] == hashlib.sha256(b"".join(rows)).hexdigest()


def test_rows_within_the_budget_are_stored_as_json() -> None:
    rec = ResultRecorder(budget=1 << 20)
    rec.set_columns(["a", "b", "c"])
    for raw in _rows(3):
        rec.add_row(raw, raw[5:])
    lines = rec.payload().decode().splitlines()
    assert json.loads(lines[0]) == {"columns": ["a", "b", "c"]}
    assert [json.loads(x) for x in lines[1:]] == [
        ["0", None, ""],
        ["1", None, "v"],
        ["2", None, "vv"],
    ]
    assert rec.meta()["stored_rows"] == 3 and rec.meta()["truncated"] is False
