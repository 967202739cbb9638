"""Log formatting that cannot carry a value out of the gateway.

Theory of operation: an exception raised while handling a statement or a row can
carry data in its message (`invalid literal for int(): '4111111111111111'`, a parser
error quoting the token it stopped at, a KeyError naming a value). Logs are not
masked and often leave the host, so `SafeFormatter` writes an exception as its type
and the frames it passed through (file, line, function), never its message or
arguments, for every exception in the chain. Uncaught exceptions in threads and the
interpreter's own hook go through the same path.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType

__all__ = ["SafeFormatter", "format_exception_safely", "install"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def format_exception_safely(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> str:
    """`Traceback ... TypeName (message withheld)`, causes and contexts included."""
    lines: list[str] = []
    seen: set[int] = set()
    chain: list[tuple[str, BaseException | None, type[BaseException] | None, TracebackType | None]]
    chain = [("", exc, exc_type, tb)]
    while chain:
        label, e, t, frames = chain.pop()
        if e is not None:
            if id(e) in seen:
                continue
            seen.add(id(e))
        if label:
            lines.append(label)
        lines.append("Traceback (most recent call last):")
        for fs in traceback.extract_tb(frames):
            lines.append(f'  File "{fs.filename}", line {fs.lineno}, in {fs.name}')
        name = (t or type(e)).__qualname__ if (t or e) is not None else "Exception"
        module = (t or type(e)).__module__ if (t or e) is not None else ""
        qual = name if module in ("builtins", "") else f"{module}.{name}"
        lines.append(f"{qual} (message withheld: it may hold data)")
        if e is not None:
            if e.__cause__ is not None:
                c = e.__cause__
                chain.append(("Caused by:", c, type(c), c.__traceback__))
            elif e.__context__ is not None and not e.__suppress_context__:
                c = e.__context__
                chain.append(
                    ("Raised while handling:", c, type(c),
                     c.__traceback__)
                )  # fmt: skip
    return "\n".join(lines)


class SafeFormatter(logging.Formatter):
    """A `logging.Formatter` whose exceptions carry no message (see module doc)."""

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return format_exception_safely(*ei)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return stack_info  # frames only: stack_info holds no exception message


def install(level: int) -> None:
    """Route the root logger, thread crashes and uncaught exceptions through SafeFormatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    crash = logging.getLogger("wardgate.crash")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        crash.error(
            "thread %s crashed", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
        )

    def sys_hook(t: type[BaseException], e: BaseException, tb: TracebackType | None) -> None:
        crash.critical("uncaught exception", exc_info=(t, e, tb))

    threading.excepthook = thread_hook
    sys.excepthook = sys_hook
