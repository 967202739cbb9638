"""Shared fixtures for the audit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS = (REPO_ROOT / ".." / "shared" / "vectors" / "merkle").resolve()


@pytest.fixture(scope="session")
def merkle_vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip(
            f"Merkle test vectors not found at {VECTORS} (expected ../shared/vectors/merkle)"
        )
    return VECTORS
