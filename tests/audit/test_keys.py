"""Keyring: C2SP signed-note key ids, file mode, rotation keeps old public keys."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from wardgate.audit.keys import (
    KeyringError,
    init_keyring,
    key_id,
    load_keyring,
    parse_vkey,
    rotate_keyring,
)

# The example key and signed message of golang.org/x/mod/sumdb/note (the signed-note
# reference implementation): checks our key id derivation and Ed25519 use against it.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)


def test_signed_note_reference_key() -> None:
    k = parse_vkey(GO_VKEY)
    assert k.key_id.hex() == "c74f20a3" == key_id("PeterNeumann", k.public).hex()
    raw = base64.b64decode(GO_SIG)
    assert raw[:4] == k.key_id
    assert k.verify(GO_TEXT, raw[4:])
    assert not k.verify(GO_TEXT.replace(b"answer", b"Answer"), raw[4:])
    assert k.vkey() == GO_VKEY
    with pytest.raises(KeyringError):
        parse_vkey(GO_VKEY.replace("c74f20a3", "c74f20a4"))


def test_init_mode_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "checkpoint.key"
    ring = init_keyring(path, "wardgate.test/log")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyringError):
        init_keyring(path, "wardgate.test/log")
    again = load_keyring(path)
    assert again.active.public == ring.active.public
    kid, sig = again.sign(b"msg")
    assert kid == ring.active.key_id and ring.active.verify(b"msg", sig)
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_keyring(path)


def test_rotation_keeps_old_public_keys(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = init_keyring(path, "o")
    _, old_sig = first.sign(b"before")
    ring = rotate_keyring(path)
    ring = rotate_keyring(path)
    keys = ring.public_keys()
    assert len(keys) == 3 and keys[0].public == first.active.public
    assert keys[0].not_after is not None and keys[0].not_after <= keys[1].not_before
    assert keys[0].verify(b"before", old_sig)
    assert ring.active.public != first.active.public
    assert keys[0].valid_at(keys[0].not_before) and not keys[0].valid_at(keys[2].not_before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_malformed_key_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("{}")
    path.chmod(0o600)
    with pytest.raises(KeyringError, match="malformed"):
        load_keyring(path)
    with pytest.raises(KeyringError, match="cannot read"):
        load_keyring(tmp_path / "missing.key")
