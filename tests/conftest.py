"""Shared fixtures: the repository's path and a hypothesis profile sized for CI (the real data sets' fixture is in
e2e/conftest.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]

# CI runs the same examples every time (a landing must not depend on a lucky draw); local runs
# search at random, and what they find is kept as a regression example.
settings.register_profile(
    "ci", deadline=None, max_examples=60, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=30)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
