"""Shared test fixtures: paths to the real data in ../shared and tiny synthetic stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"
SHARED_CARTOPY = REPO.parent / "shared" / "data" / "cartopy"

if SHARED_CARTOPY.exists():
    os.environ.setdefault("CARTOPY_DATA_DIR", str(SHARED_CARTOPY))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Directory of the real reanalysis files; tests using it skip when it is absent."""
    if not SHARED_REAL.exists():
        pytest.skip(f"real data not found at {SHARED_REAL}")
    return SHARED_REAL
