"""Bound parameters as text: what a Bind value means, for the record and for reviewers.

Theory of operation: a Bind message carries each parameter in text format (the value's
text, as `psql` would print it) or in binary format (the type's send/recv form, which
asyncpg uses for everything and psycopg for numbers). The record masks parameters as
text, so a binary value must become the text a person (and the masker) can read, or a
card number sent as `int8` or `numeric`, or an e-mail sent as binary `text`, would pass
into the record unmasked in an encoded form.

`parameter_text(value, fmt, oid)` gives PostgreSQL's own text output for the common
types, from the type OID the client declared in Parse. Anything else in binary format (an
undeclared OID, a user type, bytea, arrays, intervals...) is written in bytea's *escape*
format (`bytea_output = escape`: printable ASCII as itself, a backslash doubled, any other
byte as `\\ooo`), so ASCII content such as an e-mail address stays visible to the masker
whatever the type. Pure functions; no I/O.
"""

from __future__ import annotations

import struct
import uuid
from datetime import date, datetime, timedelta

__all__ = ["parameter_text", "escape_bytes"]

_TEXT_OIDS = frozenset({25, 1043, 1042, 19, 18, 114, 142, 705, 2275})
_BOOL, _INT2, _INT4, _INT8, _OID = 16, 21, 23, 20, 26
_FLOAT4, _FLOAT8, _NUMERIC, _UUID, _JSONB = 700, 701, 1700, 2950, 3802
_DATE, _TIME, _TIMESTAMP, _TIMESTAMPTZ = 1082, 1083, 1114, 1184
_EPOCH = datetime(2000, 1, 1)
_EPOCH_DATE = date(2000, 1, 1)
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)
_I32_MAX, _I32_MIN = 2**31 - 1, -(2**31)
_INTS = {_INT2: "!h", _INT4: "!i", _INT8: "!q", _OID: "!I"}
_PRINTABLE = frozenset(range(0x20, 0x7F)) - {0x5C}


def escape_bytes(value: bytes) -> str:
    """bytea's escape format: printable ASCII kept, `\\` doubled, other bytes `\\ooo`."""
    out = []
    for b in value:
        if b in _PRINTABLE:
            out.append(chr(b))
        elif b == 0x5C:
            out.append("\\\\")
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def parameter_text(value: bytes, fmt: int, oid: int) -> str:
    """The text of one non-NULL Bind value (`fmt` 0 text, 1 binary; `oid` from Parse,
    0 when the client left it to the server)."""
    if fmt == 0:
        return value.decode("utf-8", "replace")
    try:
        text = _binary_text(value, oid)
    except (struct.error, ValueError, OverflowError):
        text = None  # malformed for its type: the target will refuse it; show the bytes
    return escape_bytes(value) if text is None else text


def _binary_text(value: bytes, oid: int) -> str | None:
    if oid in _TEXT_OIDS:
        return value.decode("utf-8", "replace")
    fmt = _INTS.get(oid)
    if fmt is not None:
        return str(struct.unpack(fmt, value)[0])
    if oid == _BOOL:
        return {b"\x01": "t", b"\x00": "f"}.get(value)
    if oid == _FLOAT8:
        return _float_text(struct.unpack("!d", value)[0], value, "!d")
    if oid == _FLOAT4:
        return _float_text(struct.unpack("!f", value)[0], value, "!f")
    if oid == _NUMERIC:
        return _numeric_text(value)
    if oid == _UUID:
        return str(uuid.UUID(bytes=value))
    if oid == _JSONB:
        return value[1:].decode("utf-8", "replace") if value[:1] == b"\x01" else None
    if oid == _DATE:
        (days,) = struct.unpack("!i", value)
        if days in (_I32_MAX, _I32_MIN):
            return "infinity" if days > 0 else "-infinity"
        return (_EPOCH_DATE + timedelta(days=days)).isoformat()
    if oid == _TIME:
        (us,) = struct.unpack("!q", value)
        return _clock(us)
    if oid in (_TIMESTAMP, _TIMESTAMPTZ):
        (us,) = struct.unpack("!q", value)
        if us in (_I64_MAX, _I64_MIN):
            return "infinity" if us > 0 else "-infinity"
        moment = _EPOCH + timedelta(microseconds=us)
        day_us = (moment - datetime(moment.year, moment.month, moment.day)) // timedelta(
            microseconds=1
        )
        text = f"{moment.date().isoformat()} {_clock(day_us)}"
        return text + "+00" if oid == _TIMESTAMPTZ else text  # timestamptz travels in UTC
    return None


def _clock(us: int) -> str:
    seconds, micro = divmod(us, 1_000_000)
    minutes, sec = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    text = f"{hours:02d}:{minute:02d}:{sec:02d}"
    return f"{text}.{micro:06d}".rstrip("0") if micro else text


def _float_text(x: float, raw: bytes, fmt: str) -> str:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    if fmt == "!f":  # the shortest text that reads back as the same float4
        for digits in range(1, 10):
            text = f"{x:.{digits}g}"
            if struct.pack(fmt, float(text)) == raw:
                break
    else:
        text = repr(x)
    if "e" in text:
        mantissa, exp = text.split("e")
        text = f"{mantissa}e{exp[0]}{int(exp[1:]):02d}"
    return text[:-2] if text.endswith(".0") else text


def _numeric_text(value: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack("!hhHH", value[:8])
    digits = struct.unpack(f"!{ndigits}H", value[8 : 8 + 2 * ndigits])
    if sign == 0xC000:
        return "NaN"
    if sign in (0xD000, 0xF000):
        return "Infinity" if sign == 0xD000 else "-Infinity"
    if sign not in (0x0000, 0x4000) or any(d > 9999 for d in digits):
        raise ValueError("not a numeric")
    # base-10000 digits; digit i has weight (weight - i)
    int_part = "".join(
        f"{digits[i]:04d}" if 0 <= i < ndigits else "0000" for i in range(weight + 1)
    ).lstrip("0")
    frac = "".join(
        f"{digits[i]:04d}" if 0 <= i < ndigits else "0000"
        for i in range(weight + 1, weight + 1 + (dscale + 3) // 4)
    )
    text = int_part or "0"
    if dscale:
        text += "." + frac[:dscale].ljust(dscale, "0")
    return ("-" if sign == 0x4000 else "") + text
