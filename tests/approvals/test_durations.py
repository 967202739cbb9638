from __future__ import annotations

import pytest

from wardgate.approvals.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2w", 1209600.0),
        ("250ms", 0.25),
        ("45", 45.0),
        ("1.5h", 5400.0),
        ("10M", 600.0),
        (30, 30.0),
    ],
)
def test_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "10x", "-5m", "1h-", "m10", "ten minutes", "1h 2", True])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_zero_needs_permission() -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration("0s")
    assert parse_duration("0s", allow_zero=True) == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(600, "10m"), (5400, "1h30m"), (86400, "1d"), (90, "1m30s"), (2.5, "2.5s"), (0, "0s")],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, allow_zero=True) == seconds
