"""The masking error: raised when a value cannot be masked, so its row is not sent.

Theory of operation: every failure inside the masker (a malformed DataRow, an
unknown strategy, an exception in a recognizer, the compiled pre-filter or a
replacer) surfaces as `MaskingError`, whose message never carries a value; the
PostgreSQL engine ends the statement with an ErrorResponse and records it
(strict, fail closed). Also importable from `wardgate.masking` and
`wardgate.masking.masker`.
"""

from __future__ import annotations

__all__ = ["MaskingError"]


class MaskingError(Exception):
    """Masking a value failed; the row must not be sent (strict)."""
