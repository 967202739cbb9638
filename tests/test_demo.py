"""`wardgate demo` (what `make demo` runs) completes and shows each thing it promises."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wardgate.testing.pgcluster import find_pg_bin


@pytest.mark.skipif(
    find_pg_bin() is None, reason="PostgreSQL server binaries not found: apt-get install postgresql"
)
def test_demo_runs_and_exits_zero() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "[EMAIL]" in out and "1111" in out and "4111 1111 1111 1111" not in out
    assert 'denied by rule "baseline/deny-drop-table"' in out
    assert 'requested (rule "shop/review-order-deletes")' in out
    assert "the held DELETE ran after approval: DELETE 2" in out
    assert "events valid" in out and "demo complete" in out
    assert "wardgate evidence verify evidence.zip --key" in out and out.count("\nOK") >= 2
