"""COPY text format: backslash escapes of one field, undone and redone.

Theory of operation: COPY TO STDOUT in text format sends tab-separated fields
with `\\N` for NULL and backslash escapes for tab, newline, carriage return,
backslash and control bytes (octal `\\NNN`, hex `\\xHH`). The masker unescapes a
field before scanning it (an escaped newline inside an address is a newline to
the recognizers) and escapes the masked value again; a value with no backslash
is passed through as it is.
"""

from __future__ import annotations

__all__ = ["copy_escape", "copy_unescape"]

_COPY_UNESCAPE = {
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("v"): b"\v",
    ord("\\"): b"\\",
}


def copy_unescape(field: bytes) -> bytes:
    """Undo COPY text-format backslash escapes (\\n, \\t, \\\\, octal \\NNN, hex \\xHH)."""
    out = bytearray()
    i, n = 0, len(field)
    while i < n:
        c = field[i]
        if c != 0x5C or i + 1 == n:
            out.append(c)
            i += 1
            continue
        d = field[i + 1]
        if d in _COPY_UNESCAPE:
            out += _COPY_UNESCAPE[d]
            i += 2
        elif 0x30 <= d <= 0x37:
            j = i + 1
            while j < n and j < i + 4 and 0x30 <= field[j] <= 0x37:
                j += 1
            out.append(int(field[i + 1 : j], 8) & 0xFF)
            i = j
        elif d == 0x78 and i + 2 < n and field[i + 2 : i + 3].isalnum():
            j = i + 2
            while j < n and j < i + 4 and chr(field[j]) in "0123456789abcdefABCDEF":
                j += 1
            if j == i + 2:
                out.append(d)
                i += 2
            else:
                out.append(int(field[i + 2 : j], 16))
                i = j
        else:
            out.append(d)
            i += 2
    return bytes(out)


def copy_escape(value: bytes) -> bytes:
    """COPY text-format escaping of one field value."""
    if not any(c in value for c in (b"\\", b"\t", b"\n", b"\r")):
        return value
    return (
        value.replace(b"\\", b"\\\\")
        .replace(b"\t", b"\\t")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
    )
