"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# shared/ lies beside the checkout (CI clones the repo with shared/ next to it).
REAL_SEM_DIR = Path(
    os.environ.get("SSUM_REAL_SEM", Path(__file__).resolve().parents[2] / "shared/data/real-sem")
)


@pytest.fixture(scope="session")
def real_sem_dir() -> Path:
    if not REAL_SEM_DIR.is_dir():
        pytest.skip(f"real SEM test images not found at {REAL_SEM_DIR} (set SSUM_REAL_SEM)")
    return REAL_SEM_DIR
