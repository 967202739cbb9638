"""Checkpoint signing keys: an Ed25519 keyring file with rotation.

Theory of operation: one JSON file (mode 0600) holds the active private key and every
earlier public key with its validity period. Keys are named (C2SP signed-note key name,
by default the log origin) and identified by the signed-note key id: the first four bytes
of SHA-256(name || 0x0A || 0x01 || public key), 0x01 being the Ed25519 algorithm byte.
`rotate` retires the active key (its `not_after` becomes now; its public half stays) and
makes a new one, so checkpoints signed before the rotation still verify. A verifier key
is exported in the signed-note text form `name+<8 hex key id>+<base64(0x01 || pubkey)>`,
which is what an auditor is handed; the private key never leaves the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "KeyringError",
    "PublicKey",
    "Keyring",
    "key_id",
    "init_keyring",
    "load_keyring",
    "rotate_keyring",
    "parse_vkey",
]

_ALG_ED25519 = b"\x01"


class KeyringError(Exception):
    """The keyring file is missing, malformed, unsafe, or a key is unusable."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key_id(name: str, public: bytes) -> bytes:
    """C2SP signed-note key id: SHA-256(name || '\\n' || 0x01 || pubkey)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + _ALG_ED25519 + public).digest()[:4]


def _raw_public(priv: Ed25519PrivateKey) -> bytes:
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One verifier key and when it was the active signing key."""

    name: str
    public: bytes  # raw 32-byte Ed25519 public key
    not_before: str
    not_after: str | None = None  # None: still active

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def valid_at(self, when: str) -> bool:
        return self.not_before <= when and (self.not_after is None or when < self.not_after)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def vkey(self) -> str:
        """Signed-note verifier key text: name+keyid+base64(0x01 || pubkey)."""
        b64 = base64.b64encode(_ALG_ED25519 + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{b64}"

    def to_json(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "public": base64.b64encode(self.public).decode(),
            "key_id": self.key_id.hex(),
            "vkey": self.vkey(),
            "not_before": self.not_before,
            "not_after": self.not_after,
        }

    @classmethod
    def from_json(cls, d: dict) -> PublicKey:
        return cls(d["name"], base64.b64decode(d["public"]), d["not_before"], d.get("not_after"))


def parse_vkey(text: str) -> PublicKey:
    """Parse `name+hexid+base64(0x01||pub)`; checks the id matches (validity unknown)."""
    try:
        name, hexid, b64 = text.strip().split("+", 2)
        raw = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise KeyringError(f"not a verifier key: {exc}") from exc
    if len(raw) != 33 or raw[:1] != _ALG_ED25519:
        raise KeyringError("verifier key is not an Ed25519 key")
    pk = PublicKey(name, raw[1:], not_before="")
    if pk.key_id.hex() != hexid.lower():
        raise KeyringError("verifier key id does not match its key")
    return pk


@dataclass(slots=True)
class Keyring:
    """The active signing key plus every retired public key."""

    path: Path
    name: str
    private: Ed25519PrivateKey
    active_since: str
    retired: list[PublicKey] = field(default_factory=list)

    @property
    def active(self) -> PublicKey:
        return PublicKey(self.name, _raw_public(self.private), self.active_since)

    def public_keys(self) -> list[PublicKey]:
        """Every key that ever signed, oldest first, active last."""
        return [*self.retired, self.active]

    def sign(self, message: bytes) -> tuple[bytes, bytes]:
        """(key id, Ed25519 signature) of `message` with the active key."""
        return self.active.key_id, self.private.sign(message)

    def save(self) -> None:
        seed = self.private.private_bytes_raw()
        doc = {
            "format": "wardgate-keyring/1",
            "name": self.name,
            "active": {
                "private": base64.b64encode(seed).decode(),
                **self.active.to_json(),
            },
            "retired": [k.to_json() for k in self.retired],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def init_keyring(path: Path, name: str, *, force: bool = False) -> Keyring:
    """Create a keyring with a fresh Ed25519 key; refuses to overwrite unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise KeyringError(f"key file already exists: {path}")
    ring = Keyring(path, name, Ed25519PrivateKey.generate(), _now())
    ring.save()
    return ring


def load_keyring(path: Path) -> Keyring:
    path = Path(path)
    try:
        st = path.stat()
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyringError(f"cannot read key file {path}: {exc}") from exc
    if st.st_mode & 0o077:
        raise KeyringError(
            f"key file {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600"
        )
    try:
        active = doc["active"]
        priv = Ed25519PrivateKey.from_private_bytes(base64.b64decode(active["private"]))
        ring = Keyring(
            path,
            doc["name"],
            priv,
            active["not_before"],
            [PublicKey.from_json(k) for k in doc.get("retired", [])],
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise KeyringError(f"malformed key file {path}: {exc}") from exc
    if ring.active.public != base64.b64decode(active["public"]):
        raise KeyringError(f"key file {path}: public key does not match private key")
    return ring


def rotate_keyring(path: Path) -> Keyring:
    """Retire the active key (keeping its public half) and start a new one."""
    ring = load_keyring(path)
    now = _now()
    old = ring.active
    ring.retired.append(PublicKey(old.name, old.public, old.not_before, now))
    ring.private = Ed25519PrivateKey.generate()
    ring.active_since = now
    ring.save()
    return ring
