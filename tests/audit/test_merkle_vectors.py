"""Every transparency-dev inclusion/consistency vector is accepted or rejected as marked."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from wardgate.audit.merkle import verify_consistency, verify_inclusion

VECTORS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors" / "merkle").resolve()


def _cases(kind: str) -> list[Path]:
    if not VECTORS.is_dir():
        return []
    return sorted((VECTORS / kind).rglob("*.json"))


def _b64(s: str | None) -> bytes:
    return base64.b64decode(s or "")


def _proof(items: list[str] | None) -> list[bytes]:
    return [_b64(p) for p in items or []]


def _id(p: Path) -> str:
    return str(p.relative_to(VECTORS))


def test_vectors_present(merkle_vectors: Path) -> None:
    assert len(_cases("inclusion")) > 50
    assert len(_cases("consistency")) > 50


@pytest.mark.parametrize("path", _cases("inclusion"), ids=_id)
def test_inclusion_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    ok = verify_inclusion(
        _b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v["proof"]), _b64(v["root"])
    )
    assert ok is (not v["wantErr"]), v["desc"]


@pytest.mark.parametrize("path", _cases("consistency"), ids=_id)
def test_consistency_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    ok = verify_consistency(
        v["size1"], v["size2"], _proof(v["proof"]), _b64(v["root1"]), _b64(v["root2"])
    )
    assert ok is (not v["wantErr"]), v["desc"]
