"""worker_metrics.py: real sockets between responders and the page's collector.

The workers' side runs on this test's event loop; the collector runs in a thread, as
it does under the API. tests/test_workers.py drives the same through real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid

import pytest

from wardgate.metrics import Metrics
from wardgate.worker_metrics import MetricsResponder, WorkerMetrics, metrics_address


def _page(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


_SYSTEM_PYTHON = os.path.exists("/usr/bin/python3")  # one another user can run
ALLOW = 'wardgate_statements_total{connection="shop",verdict="allow"}'


def _registries(n: int) -> list[Metrics]:
    regs = [Metrics() for _ in range(n)]
    for i, m in enumerate(regs):
        m.statements[("shop", "allow")] += 10 * (i + 1)
        m.active[("shop",)] += i
    return regs


async def test_the_page_sums_every_worker_and_names_the_missing_one() -> None:
    run = uuid.uuid4().hex
    regs = _registries(3)
    responders = [MetricsResponder(run, i, regs[i]) for i in (1, 2)]
    for r in responders:
        await r.start()
    try:
        # four workers configured, worker 3 not listening (not started yet, or gone)
        page = _page(await asyncio.to_thread(WorkerMetrics(run, 0, 4, regs[0]).render, 2.0))
    finally:
        for r in responders:
            await r.close()
    assert page[ALLOW] == 60
    assert page['wardgate_sessions_active{connection="shop"}'] == 3
    assert [page[f'wardgate_worker_up{{worker="{i}"}}'] for i in range(4)] == [1, 1, 1, 0]
    assert [page[f'wardgate_worker_statements_total{{worker="{i}"}}'] for i in range(3)] == [
        10, 20, 30,
    ]  # fmt: skip
    assert page['wardgate_worker_sessions_active{worker="2"}'] == 2
    assert 'wardgate_worker_statements_total{worker="3"}' not in page  # nothing to stand in


async def test_a_silent_worker_costs_one_timeout_and_its_last_figures_stand_in() -> None:
    run = uuid.uuid4().hex
    regs = _registries(2)
    collector = WorkerMetrics(run, 0, 2, regs[0])
    responder = MetricsResponder(run, 1, regs[1])
    await responder.start()
    first = _page(await asyncio.to_thread(collector.render, 2.0))
    await responder.close()
    assert first[ALLOW] == 30 and first['wardgate_worker_up{worker="1"}'] == 1
    # a process that accepts nothing (SIGSTOP): connect succeeds, no answer ever comes
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(metrics_address(run, 1))
    silent.listen(16)
    try:
        regs[0].statements[("shop", "allow")] += 1
        t0 = time.monotonic()
        page = _page(await asyncio.to_thread(collector.render, 0.5))
        elapsed = time.monotonic() - t0
    finally:
        silent.close()
    assert 0.45 < elapsed < 3, elapsed
    assert page['wardgate_worker_up{worker="1"}'] == 0
    assert page[ALLOW] == 31  # worker 1's last 20 stands in: the sum did not go back
    assert page['wardgate_worker_statements_total{worker="1"}'] == 20


async def _serve_answers(address: str, answers: list[bytes]) -> asyncio.AbstractServer:
    """A peer on a worker's address answering with the given bytes, one per connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen(16)
    sock.setblocking(False)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(answer, sock=sock)


def _answer(index: int, seq: int, allow: int) -> bytes:
    m = Metrics()
    m.statements[("shop", "allow")] += allow
    return json.dumps({"worker": index, "seq": seq, "families": m.snapshot()}).encode()


async def test_an_older_answer_never_replaces_a_newer_one_and_a_bad_one_is_none() -> None:
    run = uuid.uuid4().hex
    local = Metrics()
    answers = [
        _answer(1, 5, 50),  # scrape 1
        _answer(1, 4, 40),  # scrape 2: a late answer to an earlier request
        b'{"worker": 1, "seq": 9, "fam',  # scrape 3: cut short
        _answer(2, 10, 99),  # scrape 4: another worker's answer on this address
        b'{"worker": 1, "seq": 20, "families": {"x": {"kind": "summary", "values": []}}}',
    ]
    server = await _serve_answers(metrics_address(run, 1), answers)
    collector = WorkerMetrics(run, 0, 2, local)
    try:
        pages = [_page(await asyncio.to_thread(collector.render, 2.0)) for _ in range(5)]
    finally:
        server.close()
    assert [p[ALLOW] for p in pages] == [50] * 5
    assert [p['wardgate_worker_up{worker="1"}'] for p in pages] == [1, 1, 0, 0, 0]


async def test_a_worker_survives_a_scraper_that_leaves() -> None:
    run = uuid.uuid4().hex
    regs = _registries(2)
    responder = MetricsResponder(run, 1, regs[1])
    await responder.start()
    try:
        for _ in range(5):  # connect and hang up at once
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(metrics_address(run, 1))
            s.close()
        await asyncio.sleep(0.05)
        page = _page(await asyncio.to_thread(WorkerMetrics(run, 0, 2, regs[0]).render, 2.0))
        assert page[ALLOW] == 30 and page['wardgate_worker_up{worker="1"}'] == 1
    finally:
        await responder.close()


async def test_a_worker_answers_no_other_uid() -> None:
    if os.getuid() != 0 or not _SYSTEM_PYTHON:
        pytest.skip("needs root (to connect as another user) and /usr/bin/python3")
    run = uuid.uuid4().hex
    responder = MetricsResponder(run, 1, _registries(2)[1])
    await responder.start()
    probe = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); "
        "s.settimeout(5); s.connect('\\0' + sys.argv[1]); print(len(s.recv(65536)))"
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/python3", "-c", probe, metrics_address(run, 1)[1:],
            user=65534, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await responder.close()
    assert proc.returncode == 0, err
    assert out.strip() == b"0"  # closed without a byte


async def test_the_page_believes_no_listener_of_another_uid() -> None:
    """Another user binds worker 1's abstract name first and answers with made-up
    figures: the page counts worker 1 as down instead."""
    if os.getuid() != 0 or not _SYSTEM_PYTHON:
        pytest.skip("needs root (to listen as another user) and /usr/bin/python3")
    run = uuid.uuid4().hex
    forged = Metrics()
    forged.statements[("shop", "allow")] += 999_999
    fake = json.dumps({"worker": 1, "pid": 1, "seq": 1, "families": forged.snapshot()})
    squatter = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); "
        "s.bind('\\0' + sys.argv[1]); s.listen(8); print('ready', flush=True)\n"
        "while True:\n c, _ = s.accept(); c.sendall(sys.argv[2].encode()); c.close()"
    )
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-c", squatter, metrics_address(run, 1)[1:], fake,
        user=65534, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        regs = _registries(2)
        page = WorkerMetrics(run, 0, 2, regs[0], timeout=1.0)
        values = _page(await asyncio.to_thread(page.render))
        assert values['wardgate_worker_up{worker="1"}'] == 0
        assert values[ALLOW] == 10  # worker 0's own figures only
    finally:
        proc.kill()
        await proc.wait()
