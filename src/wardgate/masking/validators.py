"""Checksum and structure validators for recognizer candidates.

Theory of operation: the recognizers' regular expressions are deliberately loose
(cheap to run, high recall); a candidate span only becomes a finding once the
validator for its entity accepts it. Validators take the candidate as ASCII
`bytes` (the masker works on the wire bytes of a value) and avoid Python-level
loops where a C-level builtin can do the work: the Luhn check, for instance, is
two `bytes.translate` calls and two `sum`s, no per-digit Python code.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "IBAN_LENGTHS",
    "digits_only",
    "iban_valid",
    "card_brand_ok",
    "card_valid",
    "luhn_valid",
    "ssn_valid",
    "ipv6_valid",
]

_NON_DIGITS = bytes(c for c in range(256) if not 0x30 <= c <= 0x39)
# non-digits -> space: `translate(_SPACE_NON_DIGITS).replace(b" ", b"")` keeps the digits
# in two table-driven C passes; `translate(None, _NON_DIGITS)` rebuilds a 246-byte
# deletion table on every call and costs about three times as much
_SPACE_NON_DIGITS = bytes(c if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
# Luhn doubling table: digit d -> digit sum of 2*d, kept as a byte value.
_DOUBLE = bytes(
    [(0, 2, 4, 6, 8, 1, 3, 5, 7, 9)[c - 0x30] if 0x30 <= c <= 0x39 else 0 for c in range(256)]
)
_SINGLE = bytes([c - 0x30 if 0x30 <= c <= 0x39 else 0 for c in range(256)])


def digits_only(data: bytes) -> bytes:
    """The ASCII digits of `data`, separators dropped."""
    if data.isdigit():
        return data
    return data.translate(_SPACE_NON_DIGITS).replace(b" ", b"")


def luhn_valid(digits: bytes) -> bool:
    """Luhn (mod 10) check on a string of ASCII digits."""
    if not digits:
        return False
    if not digits.isdigit():  # not the documented input: other bytes count as 0
        return (
            sum(digits[-1::-2].translate(_SINGLE)) + sum(digits[-2::-2].translate(_DOUBLE))
        ) % 10 == 0
    # the odd places from the right count as they are: their ASCII sum less 48 each
    odd = digits[-1::-2]
    return (sum(odd) - 48 * len(odd) + sum(digits[-2::-2].translate(_DOUBLE))) % 10 == 0


def card_brand_ok(digits: bytes) -> bool:
    """Issuer prefix and length of a payment card number (all major brands).

    Visa 4 (13, 16, 19); Mastercard 51-55 and 2221-2720 (16); American Express
    34/37 (15); Discover 6011, 644-649, 65 (16-19); JCB 35 (16-19) and 1800/2131 (15); Diners
    300-305, 36, 38, 39 (14-19); UnionPay 62 (16-19); Maestro 50, 56-69 (12-19);
    RuPay 60, 65, 81, 82 and Mir 2200-2204 (16).
    """
    n = len(digits)
    if n < 13 or n > 19:
        return False
    first = digits[0]
    if first == 0x34:  # 4: Visa
        return n in (13, 16, 19)
    two = int(digits[:2])
    if first == 0x33:  # 3: Amex, JCB, Diners
        if two in (34, 37):
            return n == 15
        if two == 35:
            return n >= 16
        return two in (30, 36, 38, 39) and n >= 14
    if first == 0x31:  # 1: JCB 15-digit 1800
        return n == 15 and digits[:4] == b"1800"
    if first == 0x35:  # 5: Mastercard 51-55, Maestro 50, 56-59
        return n == 16 if 51 <= two <= 55 else n >= 12
    if first == 0x32:  # 2: Mastercard 2221-2720, Mir 2200-2204
        four = int(digits[:4])
        if n == 15:
            return four == 2131  # JCB 15-digit
        return n == 16 and (2221 <= four <= 2720 or 2200 <= four <= 2204)
    if first == 0x36:  # 6: Discover, UnionPay, Maestro, RuPay
        return n >= 16 or n >= 12 and two not in (60, 62, 64, 65)
    if first == 0x38:  # 8: RuPay 81, 82
        return two in (81, 82) and n == 16
    return False


def card_valid(candidate: bytes) -> bool:
    """A card-number candidate (digits with optional spaces/dashes) is a real card."""
    digits = digits_only(candidate)
    return card_brand_ok(digits) and luhn_valid(digits)


# ISO 13616 registry lengths (SWIFT IBAN registry).
IBAN_LENGTHS: dict[bytes, int] = {
    k.encode(): v
    for k, v in {
        "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
        "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
        "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
        "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
        "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
        "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
        "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
        "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
        "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
        "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
        "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
        "YE": 30,
    }.items()
}  # fmt: skip

_IBAN_MAP = {c: str(c - 55) for c in range(0x41, 0x5B)}  # 'A' -> "10" ... 'Z' -> "35"
_IBAN_MAP.update({c: chr(c) for c in range(0x30, 0x3A)})


def iban_valid(compact: bytes) -> bool:
    """ISO 13616 check: registry length for the country, then mod 97 == 1.

    `compact` is the IBAN without spaces, upper case.
    """
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None:
        if not 15 <= len(compact) <= 34:
            return False
    elif len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = "".join([_IBAN_MAP[c] for c in rearranged])
    except KeyError:
        return False
    return int(number) % 97 == 1


def ssn_valid(candidate: bytes) -> bool:
    """US SSN structure: area not 000/666/9xx, group not 00, serial not 0000.

    Also rejects all-same-digit numbers and the well-known advertising number
    078-05-1120 and 123-45-6789.
    """
    d = digits_only(candidate)
    if len(d) != 9:
        return False
    area = d[:3]
    if area == b"000" or area == b"666" or d[0] == 0x39:
        return False
    if d[3:5] == b"00" or d[5:] == b"0000":
        return False
    if d.count(d[:1]) == 9 or d in (b"078051120", b"123456789"):
        return False
    return True


def ipv6_valid(candidate: bytes) -> bool:
    """The candidate parses as an IPv6 address (zone id allowed)."""
    try:
        ipaddress.IPv6Address(candidate.decode("ascii"))
    except ValueError:
        return False
    return True
