"""Human durations: ``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"`` <-> seconds.

Theory of operation: a duration is one or more ``<number><unit>`` terms (units ``ms``,
``s``, ``m``, ``h``, ``d``, ``w``), optionally separated by spaces; a bare number means
seconds. `parse_duration` returns float seconds and raises `ValueError` with the offending
text for anything else (empty, negative, unknown unit, zero when ``allow_zero`` is false).
`format_duration` is its inverse for display (``600`` -> ``"10m"``), used in the
messages agents and reviewers read.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "format_duration"]

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_TERM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d|w)\s*", re.IGNORECASE)
_BARE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")


def parse_duration(text: str | int | float, *, allow_zero: bool = False) -> float:
    """Return the number of seconds in `text` (``"1h"`` -> ``3600.0``)."""
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        bare = _BARE.fullmatch(text)
        if bare:
            seconds = float(bare.group(1))
        else:
            pos, seconds, terms = 0, 0.0, 0
            while pos < len(text):
                m = _TERM.match(text, pos)
                if not m or m.end() == pos:
                    raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 10m, 1h, 7d")
                seconds += float(m.group(1)) * _UNITS[m.group(2).lower()]
                pos, terms = m.end(), terms + 1
            if terms == 0:
                raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 10m, 1h, 7d")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}: must be a finite, non-negative length")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds compactly: 600 -> "10m", 5400 -> "1h30m", 2.5 -> "2.5s"."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot format duration {seconds!r}")
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(round(seconds))
    if rest == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            count, rest = divmod(rest, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)
