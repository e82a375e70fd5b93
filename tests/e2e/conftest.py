"""Fixtures of the end-to-end tests on the real data sets in tests/data."""
from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    assert REAL_DATA.is_dir(), f"expected the real data sets at {REAL_DATA}"
    return REAL_DATA
