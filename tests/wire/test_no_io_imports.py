"""The wire layer is sans-IO: importing it must not pull in asyncio, socket or ssl."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys
import wardgate.wire
import wardgate.wire.pg
from wardgate.wire.pg import auth, backend, constants, framing, frontend, messages, writers
print(json.dumps(sorted(m for m in ("asyncio", "socket", "ssl", "selectors") if m in sys.modules)))
"""


def test_importing_wire_imports_no_io_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_check_itself_can_fail() -> None:
    code = "import asyncio\n" + CODE
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "asyncio" in json.loads(out.stdout.strip().splitlines()[-1])
