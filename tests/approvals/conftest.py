"""Fixtures for the approval tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.approvals.helpers import open_store
from wardgate.audit.store import AuditStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    s = open_store(tmp_path / "audit.db")
    yield s
    s.close()
