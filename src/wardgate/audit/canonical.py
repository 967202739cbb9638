"""Canonical encodings and hashes of the audit log.

Theory of operation: an audit event is hashed as canonical JSON (sorted keys, no
insignificant whitespace, UTF-8 kept as-is) with exactly the keys in `EVENT_KEYS`. The
Merkle tree (RFC 6962 / RFC 9162) hashes a leaf as SHA-256(0x00 || body) and an interior
node as SHA-256(0x01 || left || right). Everything that hashes or re-hashes an event
(the store when appending, verify when recomputing, evidence bundles when checking)
goes through this module, so there is exactly one definition of the bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = [
    "EVENT_KEYS",
    "EMPTY_ROOT",
    "canonical_json",
    "event_body",
    "leaf_hash",
    "node_hash",
    "sha256_hex",
]

EVENT_KEYS: tuple[str, ...] = (
    "seq",
    "time",
    "session",
    "identity",
    "connection",
    "kind",
    "verdict",
    "rule",
    "payload_hash",
    "meta",
)

#: Root hash of the empty tree: SHA-256 of the empty string (RFC 9162 2.1.1).
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def canonical_json(obj: Any) -> bytes:
    """The one canonical JSON encoding: sorted keys, compact separators, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_body(fields: dict[str, Any]) -> bytes:
    """Canonical body of an event; `fields` must hold exactly `EVENT_KEYS`."""
    if set(fields) != set(EVENT_KEYS):
        extra = sorted(set(fields) - set(EVENT_KEYS))
        missing = sorted(set(EVENT_KEYS) - set(fields))
        raise ValueError(f"event keys wrong: extra={extra} missing={missing}")
    return canonical_json(fields)


def leaf_hash(body: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || body)."""
    return hashlib.sha256(_LEAF_PREFIX + body).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256, the address of a payload."""
    return hashlib.sha256(data).hexdigest()
