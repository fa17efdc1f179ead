"""Fixtures of the store's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from guided_evolution.runstore.git_store import GitStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GitStore]:
    """A new, empty run repository (``tmp_path / "repo.git"``), closed after the test."""
    s = GitStore.init(tmp_path / "repo.git")
    yield s
    s.close()
