"""Logged exceptions carry their type and frames, never their message (it may hold data)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SECRET = "4111111111111111"

SCRIPT = textwrap.dedent(
    f"""
    import logging, threading
    from wardgate.logsafe import install

    install(logging.INFO)
    log = logging.getLogger("wardgate.engines.postgres.relay")

    def parse_amount(text):
        return int(text)

    def handle():
        try:
            parse_amount("card {SECRET}")
        except ValueError as exc:
            raise RuntimeError("while handling row with {SECRET}") from exc

    try:
        handle()
    except Exception:
        log.exception("response processing failed")

    try:
        try:
            {{}}["{SECRET}"]
        except KeyError:
            raise TypeError("context {SECRET}")
    except Exception:
        log.exception("policy evaluation failed")

    def crash():
        raise LookupError("{SECRET} in a thread")

    t = threading.Thread(target=crash, name="wardgate-audit:test")
    t.start(); t.join()
    raise SystemError("{SECRET} uncaught")
    """
)


def test_exception_messages_are_withheld_everywhere() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    err = proc.stderr
    assert proc.returncode != 0  # the last exception was uncaught
    assert SECRET not in err and SECRET not in proc.stdout
    # what an operator needs is still there: message, type, where it happened
    assert "response processing failed" in err and "policy evaluation failed" in err
    assert "ValueError (message withheld" in err and "RuntimeError (message withheld" in err
    assert "Caused by:" in err and "Raised while handling:" in err
    assert "KeyError (message withheld" in err and "TypeError (message withheld" in err
    assert "in parse_amount" in err and "in handle" in err
    assert "thread wardgate-audit:test crashed" in err and "LookupError" in err
    assert "uncaught exception" in err and "SystemError (message withheld" in err
