"""Shared fixtures: paths to the real data and a hypothesis profile sized for CI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO / "tests" / "data"

# CI runs the same examples every time (a landing must not depend on a lucky draw); local runs
# search at random, and what they find is kept as a regression example.
settings.register_profile(
    "ci", deadline=None, max_examples=60, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=30)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    assert REAL_DATA.is_dir(), f"expected the real data sets at {REAL_DATA}"
    return REAL_DATA


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
