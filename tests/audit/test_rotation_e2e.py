"""`wardgate keys rotate` against a running `wardgate serve`: no restart, and verify passes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import start_gateway
from wardgate.audit.checkpoint import parse_note, read_published
from wardgate.testing.pgcluster import PgCluster

pytestmark = pytest.mark.slow


def _cli(gw, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wardgate", *args, "--config", str(gw.config)],
        capture_output=True, text=True, env=gw.env, timeout=60,
    )  # fmt: skip


def _key_ids(published: Path) -> list[str]:
    return [parse_note(n)[1][0].key_id.hex() for n in read_published(published)]


def _wait_for_checkpoints(published: Path, count: int, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if published.exists():
            ids = _key_ids(published)
            if len(ids) >= count:
                return ids
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} checkpoints published")


def test_rotate_while_serving(pg_cluster: PgCluster, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, pg_cluster)
    published = tmp_path / "published-checkpoints.txt"
    try:
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            conn.execute("SELECT 1")
        first = _wait_for_checkpoints(published, 1)
        r = _cli(gw, "keys", "rotate")
        assert r.returncode == 0, r.stderr
        with psycopg.connect(gw.dsn(), autocommit=True) as conn:
            conn.execute("SELECT 2")
        # a checkpoint of events from before the rotation (the first session's end) may
        # still be signed with the old key; a later one must use the new key
        deadline = time.monotonic() + 30
        ids = _wait_for_checkpoints(published, len(first) + 1)
        while ids[-1] == first[0] and time.monotonic() < deadline:
            time.sleep(0.2)
            ids = _key_ids(published)
        assert ids[-1] != first[0]  # the running gateway signs with the new key
    finally:
        gw.proc.stop()
    r = _cli(gw, "verify", "--published", str(published))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checkpoints valid" in r.stdout
    assert len(set(_key_ids(published))) == 2
