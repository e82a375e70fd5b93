"""Time zone names in rule files are checked against zoneinfo's list without listing it each time."""
from __future__ import annotations

import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulecrm import timeutil

ZONES = sorted(zoneinfo.available_timezones())


def test_every_listed_zone_is_a_zone_name():
    assert all(timeutil.is_zone_name(name) for name in ZONES)


@pytest.mark.parametrize("name", [
    "posixrules", "posix/Asia/Shanghai", "right/UTC", "asia/shanghai", "Asia", "Asia/", "../etc/passwd",
    "zone.tab", "tzdata.zi", "", "Asia//Shanghai", "./UTC", "UTC/", "Etc/../UTC", "/etc/localtime", "Asia/Shanghai/x",
])
def test_what_is_not_listed_is_not_a_zone_name(name):
    assert not timeutil.is_zone_name(name)
    assert name not in ZONES


def _spelled_otherwise(name: str, how: int) -> str:
    return [name.lower(), name.upper(), f"posix/{name}", f"right/{name}", f"{name}/", f"./{name}",
            name.replace("/", "//"), f"{name}x", name[:-1], f"Etc/../{name}"][how]


@given(st.sampled_from(ZONES), st.integers(0, 9) | st.none())
def test_a_name_is_a_zone_name_exactly_when_zoneinfo_lists_it(name, how):
    candidate = name if how is None else _spelled_otherwise(name, how)
    assert timeutil.is_zone_name(candidate) == (candidate in ZONES)


def test_a_zone_in_the_database_is_found_without_listing_every_zone(monkeypatch):
    def listing():
        raise AssertionError("listed every zone")

    monkeypatch.setattr(zoneinfo, "available_timezones", listing)
    timeutil.zone_names.cache_clear()
    try:
        assert timeutil.is_zone_name("Asia/Shanghai") and timeutil.is_zone_name("UTC")
    finally:
        timeutil.zone_names.cache_clear()
