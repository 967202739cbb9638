"""A PREPARE or Parse the target refuses or skips leaves a name as it was.

SQL PREPARE and protocol Parse share one namespace: after `PREPARE p AS DELETE ...`, a
protocol Parse of `p` as `SELECT 1` (or a SQL `PREPARE p AS SELECT 1`) is refused by the
target (42P05, the name exists), or skipped after an earlier error, but the policy took
`p` as the SELECT from the moment it was decided: SQL `EXECUTE p` was then decided (and
recorded) as SELECT 1 while the DELETE ran, also when sent pipelined.

Raw protocol bytes through a real gateway and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.approvals.test_end_to_end import pending_for
from tests.approvals.test_message_review import _decide
from tests.conftest import start_gateway
from tests.engines.postgres.test_relay_state import _count, _errors, _Session, _table
from wardgate.testing.pgcluster import PgCluster, free_port
from wardgate.wire.pg import writers as w


@pytest.fixture
def gw(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Any]:
    api_port = free_port()
    gateway: Any = start_gateway(
        tmp_path,
        pg_cluster,
        api_port=api_port,
        extra={"approvals": {"default_ttl": "3s", "poll_interval": "0.1s"}},
    )
    gateway.api = f"http://127.0.0.1:{api_port}"
    try:
        yield gateway
    finally:
        gateway.proc.stop()


@pytest.mark.parametrize(
    "parse",
    [
        pytest.param(lambda: w.parse("p", "SELECT 1") + w.sync(), id="refused-parse"),
        pytest.param(
            # skipped by the target after an earlier error in the same batch
            lambda: (
                w.parse("", "SELECT 1/0")
                + w.bind("", "", (), (), ())
                + w.execute("", 0)
                + w.parse("p", "SELECT 1")
                + w.sync()
            ),
            id="skipped-parse",
        ),
    ],
)
def test_a_refused_parse_of_a_prepared_name_does_not_change_what_execute_runs(
    gw: Any, parse: Any
) -> None:
    _table(gw, "pr_rows")
    s = _Session(gw)
    try:
        # the PREPARE is held (a DELETE without WHERE) and approved once: each
        # EXECUTE of it is held again
        run = s.send_async(w.query("PREPARE p AS DELETE FROM pr_rows"))
        _decide(gw, pending_for(gw, "pr_rows"), "approve")
        run["thread"].join(20)
        assert not _errors(run["msgs"]), run
        got = s.send(parse())
        assert _errors(got)  # the name exists (or the batch failed before it)
        msgs = s.send(w.query("EXECUTE p"))
        # still the DELETE without WHERE: held for review, nobody approves
        errors = _errors(msgs)
        assert errors and "wardgate" in errors[0]["M"], msgs
        assert _count(gw, "pr_rows") == "3", "the DELETE ran as if it were SELECT 1"
        assert not _errors(s.send(w.query("SELECT 1")))
    finally:
        s.close()


def test_a_sql_prepare_the_target_refused_does_not_change_what_execute_runs(gw: Any) -> None:
    """The same through SQL alone: `PREPARE p AS SELECT 1` of a name that exists is
    refused by the target (42P05), and `PREPARE` in a failed transaction is not run."""
    _table(gw, "pr_sql")
    s = _Session(gw)
    try:
        run = s.send_async(w.query("PREPARE p AS DELETE FROM pr_sql"))
        _decide(gw, pending_for(gw, "pr_sql"), "approve")
        run["thread"].join(20)
        assert not _errors(run["msgs"]), run
        errors = _errors(s.send(w.query("PREPARE p AS SELECT 1")))
        assert errors and errors[0]["C"] == "42P05", errors
        assert _errors(s.send(w.query("BEGIN; SELECT 1/0")))
        assert _errors(s.send(w.query("PREPARE p AS SELECT 2")))  # 25P02: not run
        assert not _errors(s.send(w.query("ROLLBACK")))
        errors = _errors(s.send(w.query("EXECUTE p")))
        assert errors and "wardgate" in errors[0]["M"], errors
        assert _count(gw, "pr_sql") == "3", "the DELETE ran as if it were SELECT 1"
        # named again through the gateway, the name is known again
        assert not _errors(s.send(w.query("DEALLOCATE p; PREPARE p AS SELECT 3")))
        assert not _errors(s.send(w.query("EXECUTE p")))
    finally:
        s.close()


def test_a_pipelined_prepare_of_a_held_name_does_not_change_what_execute_runs(gw: Any) -> None:
    """Sent without waiting: `EXECUTE p` is decided before the target's refusal of
    the second PREPARE comes back, so the gateway may not take that PREPARE as done."""
    from tests.engines.postgres.test_robustness import _read_until
    from wardgate.wire.pg.framing import MessageReader

    _table(gw, "pr_pipe")
    s = _Session(gw)
    try:
        run = s.send_async(w.query("PREPARE p AS DELETE FROM pr_pipe"))
        _decide(gw, pending_for(gw, "pr_pipe"), "approve")
        run["thread"].join(20)
        assert not _errors(run["msgs"]), run
        s.sock.sendall(w.query("PREPARE p AS SELECT 1") + w.query("EXECUTE p"))
        reader = MessageReader()
        first = _read_until(s.sock, reader, {ord("Z")})
        second = _read_until(s.sock, reader, {ord("Z")})
        assert _errors([(m[0], m[1]) for m in first])  # 42P05
        errors = _errors([(m[0], m[1]) for m in second])
        assert errors and "wardgate" in errors[0]["M"], second
        assert _count(gw, "pr_pipe") == "3", "the DELETE ran as if it were SELECT 1"
    finally:
        s.close()
