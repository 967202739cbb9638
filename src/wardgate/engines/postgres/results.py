"""Recording what one statement returned, as it streams.

A `ResultRecorder` counts rows, keeps the (already masked) rows as JSON lines up to a
byte budget, and digests every row, so the record of a 10-million-row result costs a
fixed amount of memory. When the statement ends it appends one `result` event. The rows
are stored as a payload addressed by SHA-256; the event names it.

The digest is SHA-256 over the DataRow messages exactly as the agent received them
(type byte, length and body, in order): what the agent saw, byte for byte. Once the
budget is spent nothing needs decoding any more, so a run of rows that passes unchanged
is counted and digested as one slice (`add_rows`), without a Python step per row.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from wardgate.wire.pg.backend import decode_data_row

__all__ = ["ResultRecorder", "columns_head", "rows_from_tag"]


def rows_from_tag(tag: str) -> int | None:
    """`SELECT 5` -> 5, `INSERT 0 3` -> 3, `BEGIN` -> None."""
    parts = tag.rsplit(" ", 1)
    if len(parts) == 2 and parts[1].isdigit():
        return int(parts[1])
    return None


_encode = json.JSONEncoder(ensure_ascii=False).encode
_json_str = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _row_line(values: list[bytes | None]) -> bytes:
    """`_encode([_text(v) for v in values]).encode()`, without a JSONEncoder pass per row:
    the same bytes (`encode_basestring` is what that encoder uses, ", " its separator)."""
    return (
        "["
        + ", ".join(
            ["null" if v is None else _json_str(v.decode("utf-8", "replace")) for v in values]
        )
        + "]"
    ).encode()


def columns_head(names: list[str]) -> bytes:
    """The payload's first line for a result with these columns."""
    return _encode({"columns": names}).encode()


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace")


class ResultRecorder:
    __slots__ = (
        "budget",
        "rows",
        "stored_rows",
        "stored_bytes",
        "total_bytes",
        "truncated",
        "columns",
        "_head",
        "_lines",
        "_digest",
        "copy_bytes",
    )

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.rows = 0
        self.stored_rows = 0
        self.stored_bytes = 0
        self.total_bytes = 0
        self.truncated = False
        self.columns: list[str] | None = None
        self._head: bytes | None = None
        self._lines: list[bytes] = []
        self._digest = hashlib.sha256()
        self.copy_bytes = 0

    def set_columns(self, names: list[str], head: bytes | None = None) -> None:
        """`head`: `columns_head(names)` when the caller has it already (a cached plan)."""
        self.columns = names
        self._head = head

    def add_row(self, raw: bytes, body: bytes) -> None:
        """One DataRow as sent to the agent (masked when masking applies): the whole
        message `raw` and its `body`."""
        self.rows += 1
        self.total_bytes += len(body)
        self._digest.update(raw)
        if self.truncated:
            return
        line = _row_line(decode_data_row(body))
        if self.stored_bytes + len(line) > self.budget:
            self.truncated = True
            return
        self._lines.append(line)
        self.stored_bytes += len(line) + 1
        self.stored_rows += 1

    def add_rows(self, raw_run: bytes, count: int) -> None:
        """`count` whole DataRow messages, back to back, passed on unchanged. Only once the
        budget is spent (`truncated`): before that each row goes through `add_row`."""
        self.rows += count
        self.total_bytes += len(raw_run) - 5 * count
        self._digest.update(raw_run)

    def add_copy_data(self, data: bytes) -> None:
        """COPY TO STDOUT data as sent to the agent; kept as text lines within the budget."""
        self.copy_bytes += len(data)
        self.total_bytes += len(data)
        self._digest.update(data)
        if self.truncated:
            return
        if self.stored_bytes + len(data) > self.budget:
            self.truncated = True
            return
        self.rows += data.count(b"\n")
        line = _encode({"copy": data.decode("utf-8", "replace")}).encode()
        self._lines.append(line)
        self.stored_bytes += len(line) + 1
        self.stored_rows += 1

    def payload(self) -> bytes | None:
        if not self._lines and self.columns is None:
            return None
        head = self._head
        if head is None:
            head = _encode({"columns": self.columns}).encode()
        if not self._lines:
            return head + b"\n"
        return b"\n".join([head, *self._lines]) + b"\n"

    def meta(self) -> dict[str, Any]:
        return {
            "rows_streamed": self.rows,
            "stored_rows": self.stored_rows,
            "truncated": self.truncated,
            "total_bytes": self.total_bytes,
            "digest": self._digest.hexdigest(),
        }
