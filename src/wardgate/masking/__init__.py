"""Inline data masking: recognizers, strategies and the streaming result masker.

Pure code (no sockets, no store): the PostgreSQL engine builds one
`MaskingEngine` from the `masking:` configuration, calls `plan()` per result and
feeds DataRow bodies / COPY lines through the returned `ResultMasker`.
"""

from wardgate.masking.baseline import BASELINE_ENTITIES, BASELINE_MASK
from wardgate.masking.engine import (
    ColumnInfo,
    CustomEntity,
    MaskingConfig,
    MaskingEngine,
    MaskingError,
    ResultMasker,
)

__all__ = [
    "BASELINE_ENTITIES",
    "BASELINE_MASK",
    "ColumnInfo",
    "CustomEntity",
    "MaskingConfig",
    "MaskingEngine",
    "MaskingError",
    "ResultMasker",
]
