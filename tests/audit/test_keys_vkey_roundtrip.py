"""Verifier keys round-trip whatever bytes their base64 holds (`+` included)."""

from __future__ import annotations

from pathlib import Path

from wardgate.audit.keys import init_keyring, parse_vkey


def test_vkeys_with_plus_in_base64_parse(tmp_path: Path) -> None:
    seen_plus = False
    for i in range(40):
        ring = init_keyring(tmp_path / f"k{i}.key", "wardgate/test")
        for key in ring.public_keys():
            text = key.vkey()
            seen_plus |= "+" in text.split("+", 2)[2]
            assert parse_vkey(text).vkey() == text
    assert seen_plus, "no key with '+' in its base64 was generated; the test proves nothing"
