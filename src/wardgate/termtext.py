"""Text from agents, made safe to show on a person's terminal or in a chat message.

Theory of operation: statements, parameters, row values, application names, claimed
identities and reasons are chosen by agents, and reviewers read them in `wardgate replay`,
`events`, `sessions`, `approvals list|show`, `masking report`, webhook messages and the
evidence report. Printed raw, a control sequence in them is obeyed by the reviewer's
terminal: `ESC[1A ESC[2K` erases the line above (a DROP vanishes from the timeline),
`ESC]0;...BEL` retitles the window, `\\r` overwrites what was printed, and Unicode bidi
overrides (U+202E) or zero-width characters make a statement read other than it runs. `shown` replaces every such character with a
visible escape (`\\x1b`, `\\u202e`), so the reviewer sees that it is there and what it is.
Machine-readable output (`--json`, the API) stays exact: `json_line` writes the same
characters as JSON `\\uXXXX` escapes, so a parser gets the value as recorded and a
terminal showing the JSON obeys nothing. The evidence report's cells use `shown` too.

`slack_text` escapes what Slack's mrkdwn would act on (`<!channel>`, `<url|label>`, `&`)
and breaks code spans, so a statement cannot close its code block and write the message.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["json_line", "shown", "slack_text"]

# Unicode categories Cc (C0, DEL, C1), Cf (format: bidi controls, zero-width characters,
# soft hyphen, BOM, tags), Zl/Zp (line and paragraph separators) and Cs (lone surrogates
# from undecodable bytes), as of Unicode 15 (tests check the list against unicodedata),
# plus the invisible Hangul fillers that render as blank letters.
_REST = (
    "\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ud800-\udfff"
    "\ufeff\uffa0\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = re.compile(f"[\x00-\x1f{_REST}]")
_UNSAFE_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f{_REST}]")


def _escape(match: re.Match[str]) -> str:
    cp = ord(match.group())
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def shown(value: object, *, newlines: bool = False) -> str:
    """`value` as text a terminal shows and never obeys: control, format and invisible
    characters become visible escapes (`\\x1b`, `\\u202e`). With `newlines`, a line feed
    stays a line break (a multi-line statement), everything else is still escaped."""
    text = value if isinstance(value, str) else str(value)
    return (_UNSAFE_BUT_NEWLINE if newlines else _UNSAFE).sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    cp = ord(match.group())
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    cp -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def json_line(value: Any, **kw: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)` with every character `shown` would escape
    written as a JSON `\\uXXXX` escape: the same value to any JSON parser, but nothing a
    terminal obeys, and no raw U+2028, NEL or FS for a line splitter to break a line at
    (str.splitlines() splits there). Other non-ASCII text stays readable."""
    return _UNSAFE.sub(_json_escape, json.dumps(value, ensure_ascii=False, **kw))


_SLACK = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "\u02cb"})


def slack_text(value: object, *, newlines: bool = False) -> str:
    """`shown(value)` for Slack mrkdwn: `&`, `<`, `>` escaped as Slack asks, and a
    backtick written as U+02CB so no code span or block can be closed from inside. A line
    break stays one only with `newlines` (a code block): in a one-line summary it could
    start a line that reads as the gateway's own."""
    return shown(value, newlines=newlines).translate(_SLACK)
