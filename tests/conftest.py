"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OSF_SHARED_DIR", REPO_ROOT.parent / "shared"))

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder; tests using it skip when it is absent (users' machines)."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED
