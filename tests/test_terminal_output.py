"""What agents send is shown to reviewers, never obeyed by their terminal.

A real gateway and PostgreSQL: an agent sends statements, values, an application name
and a claimed user name carrying terminal control sequences (cursor up and erase line to
hide a DELETE, an OSC window title, a carriage return, a bidi override, a zero-width
space) and rich markup; `wardgate replay`, `events`, `sessions`, `approvals list` and
`approvals show` run on a pseudo-terminal, as a reviewer runs them. What they print must
hold none of the injected sequences and show each as a visible escape.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import RunningGateway, start_gateway
from wardgate.testing.pgcluster import PgCluster

pytestmark = pytest.mark.slow

UP_ERASE = "\x1b[1A\x1b[2K"  # cursor up one line, erase it
TITLE = "\x1b]0;owned\x07"  # OSC: set the window title
BIDI = "\u202e"  # right-to-left override
ZWSP = "\u200b"
INJECTED = (UP_ERASE, TITLE, "\x1b[2J", BIDI, ZWSP, "\r", "\x07")


@pytest.fixture(scope="module")
def gw(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("gw-term"), pg_cluster)
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def on_tty(gw: RunningGateway, *args: str, timeout: float = 30) -> tuple[int, str]:
    """Run `wardgate ARGS -c CONFIG` with stdout on a pseudo-terminal, as a person would."""
    master, slave = pty.openpty()
    env = {**os.environ, **gw.env, "COLUMNS": "250", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wardgate", *args, "-c", str(gw.config)],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(master)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in err, err
    return proc.returncode, out.decode("utf-8", "replace").replace("\r\n", "\n")


def assert_inert(text: str) -> None:
    for seq in INJECTED:
        assert seq not in text, f"{seq!r} reached the terminal:\n{text!r}"


def test_agent_text_is_shown_not_obeyed(gw: RunningGateway) -> None:
    app = f"job{TITLE}"
    with psycopg.connect(gw.dsn(application_name=app), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS term_t (id int)")
        conn.execute("INSERT INTO term_t VALUES (1), (2)")
        conn.execute(
            f"SELECT 1 AS x /* {UP_ERASE} */, '{BIDI}evil{ZWSP}' AS \"y{TITLE}\", "
            "'[/x] [black on black]hidden[/]' AS z, %s::text AS p, "
            "E'line\\u2028sep\\u0085nel\\u001cfs' AS seps",
            (f"param\r{UP_ERASE}",),
        ).fetchall()
    # a refused login with a claimed user name full of escapes (recorded as auth_failure)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(gw.dsn(), user=f"bad{UP_ERASE}user", connect_timeout=5).close()

    # a statement held for review, with escapes in its text and in the agent's reason
    held_conn = psycopg.connect(gw.dsn(application_name=app), autocommit=True)
    held_conn.execute(f"SET wardgate.reason = 'routine{UP_ERASE}'")
    errors: list[Exception] = []

    def run() -> None:
        try:
            held_conn.execute(f"DELETE FROM term_t /* safe{UP_ERASE}\r{BIDI} */")
        except psycopg.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        approval_id = None
        deadline = time.monotonic() + 20
        while approval_id is None and time.monotonic() < deadline:
            code, listing = on_tty(gw, "approvals", "list")
            assert code == 0, listing
            if "ap-" in listing:
                approval_id = "ap-" + listing.split("ap-", 1)[1][:8]
            else:
                time.sleep(0.2)
        assert approval_id, "no approval request appeared"
        assert_inert(listing)
        assert "\\x1b[1A\\x1b[2K" in listing and "\\x1b]0;owned\\x07" in listing

        code, full = on_tty(gw, "approvals", "show", approval_id)
        assert code == 0, full
        assert_inert(full)
        assert "DELETE FROM term_t /* safe\\x1b[1A\\x1b[2K\\x0d\\u202e */" in full
        assert "routine\\x1b[1A\\x1b[2K" in full

        tsv = subprocess.run(
            [sys.executable, "-m", "wardgate", "approvals", "list", "-c", str(gw.config)],
            capture_output=True, text=True, env={**os.environ, **gw.env}, timeout=30,
        )  # fmt: skip
        assert tsv.returncode == 0 and len(tsv.stdout.splitlines()) == 1, tsv.stdout
        assert_inert(tsv.stdout)
    finally:
        subprocess.run(
            [sys.executable, "-m", "wardgate", "approvals", "deny", str(approval_id),
             "--as", "alice", "--reason", "no", "-c", str(gw.config)],
            capture_output=True, env={**os.environ, **gw.env}, timeout=30,
        )  # fmt: skip
        thread.join(20)
        held_conn.close()
    assert errors and errors[0].sqlstate == "42501"

    code, sessions = on_tty(gw, "sessions")
    assert code == 0, sessions
    assert_inert(sessions)
    assert "job\\x1b]0;owned\\x07" in sessions

    code, events = on_tty(gw, "events")
    assert code == 0, events
    assert_inert(events)
    assert "bad\\x1b[1A\\x1b[2Kuser" in events

    listed = subprocess.run(
        [sys.executable, "-m", "wardgate", "sessions", "--json", "-c", str(gw.config)],
        capture_output=True, text=True, env={**os.environ, **gw.env}, timeout=30, check=True,
    ).stdout  # fmt: skip
    ids = [json.loads(line)["id"] for line in listed.splitlines()
           if json.loads(line)["application_name"] == app]  # fmt: skip
    assert ids
    for sid in ids:
        code, timeline = on_tty(gw, "replay", sid)
        assert code == 0, timeline
        assert_inert(timeline)
    code, timeline = on_tty(gw, "replay", ids[0])
    assert "/* \\x1b[1A\\x1b[2K */" in timeline  # the statement, escapes visible
    assert "[/x] [black on black]hidden[/]" in timeline  # markup printed, not applied
    assert "\\u202eevil\\u200b" in timeline and "y\\x1b]0;owned\\x07" in timeline
    # a row value with U+2028, NEL and FS: one row still (the record splits at \\n only)
    assert "line\\u2028sep\\x85nel\\x1cfs" in timeline

    # --json stays exact: the recorded bytes, JSON-escaped
    raw = subprocess.run(
        [sys.executable, "-m", "wardgate", "replay", ids[0], "--json", "-c", str(gw.config)],
        capture_output=True, text=True, env={**os.environ, **gw.env}, timeout=30, check=True,
    ).stdout  # fmt: skip
    # JSON Lines split at "\n"; splitlines() works too (no raw U+2028 or NEL), and the
    # values are exact: the escape sequences are JSON escapes, not raw bytes
    assert raw.splitlines() == raw.rstrip("\n").split("\n") and "\x1b" not in raw
    texts = [json.loads(line).get("text") or "" for line in raw.splitlines()]
    assert any(UP_ERASE in t for t in texts)


def test_shown_escapes_every_control_and_format_character() -> None:
    import unicodedata

    from wardgate.termtext import shown

    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            assert shown(ch) != ch, hex(cp)
    assert shown("a\nb", newlines=True) == "a\nb" and shown("a\nb") == "a\\x0ab"
    assert shown("DROP\u202e") == "DROP\\u202e" and shown("é ü 中") == "é ü 中"


def test_slack_text_cannot_close_its_code_block() -> None:
    from wardgate.termtext import slack_text

    text = slack_text("SELECT 1 ``` <!channel> <https://x|click> & `y`")
    assert "`" not in text and "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text


def body_text(a: object) -> str:
    from wardgate.approvals.notify import notification_body

    return notification_body("approval_requested", a, "json")["text"]


def test_webhook_text_cannot_be_written_by_the_agent() -> None:
    """A statement that closes its code block and mentions @channel with a link, and a
    reason with a cursor-up: the Slack body shows them inert, the JSON `approval` exact."""
    from wardgate.approvals.model import Approval
    from wardgate.approvals.notify import notification_body

    statement = "DELETE FROM t ```\n*approved by security* <!channel> <https://evil.example|ok>"
    a = Approval(
        id="ap-abcdefgh", session="s", identity="ci-bot", connection="prod", fingerprint="f",
        statement=statement, rule="baseline/review-without-where", reason=f"ok{UP_ERASE}",
        application_name=f"job{TITLE}", client_addr=None, requested_at=0.0,
        expires_at=600.0, approvals_required=1, status="pending",
    )  # fmt: skip
    slack = notification_body("approval_requested", a, "slack")
    blob = json.dumps(slack, ensure_ascii=False)
    assert "<!channel>" not in blob and "<https://" not in blob and "```\\n*approved" not in blob
    # the one-line summary keeps no line break of the statement's (a fake next line)
    assert "\n" not in slack["text"] and "\n" not in body_text(a)
    code = slack["blocks"][2]["text"]["text"]
    assert code.startswith("```") and code.endswith("```") and code.count("```") == 2
    assert_inert(blob)
    body = notification_body("approval_requested", a, "json")
    assert body["approval"]["statement"] == statement  # machine-readable: exact
    assert body["approval"]["reason"] == f"ok{UP_ERASE}"
    assert_inert(body["text"])
