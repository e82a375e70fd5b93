"""Reading rules pauses CPython's automatic cyclic collection, and puts it back as it was."""
from __future__ import annotations

import gc

import pytest

from rulecrm.rulefile import loader

RULES = """\
rules:
  - id: r
    on: order.placed
    tag: buyer
"""


@pytest.fixture(autouse=True)
def collection_on():
    """Each test starts with automatic collection on (a test elsewhere may have left it off)."""
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    if not was_enabled:
        gc.disable()


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def spy_on_reading(monkeypatch) -> list[bool]:
    seen = []
    read_rules = loader.read_rules

    def reading(*args):
        seen.append(gc.isenabled())
        return read_rules(*args)

    monkeypatch.setattr(loader, "read_rules", reading)
    return seen


def test_collection_is_off_while_rules_are_read_and_on_again_after(monkeypatch, rules_file):
    seen = spy_on_reading(monkeypatch)
    ruleset, diagnostics = loader.check_rules(rules_file)
    assert ruleset is not None and seen == [False]
    assert gc.isenabled()


def test_collection_comes_back_after_rules_that_fail(monkeypatch, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [\n", encoding="utf-8")
    ruleset, diagnostics = loader.check_rules(path)
    assert ruleset is None and diagnostics
    assert gc.isenabled()


def test_a_program_that_turned_collection_off_keeps_it_off(monkeypatch, rules_file):
    seen = spy_on_reading(monkeypatch)
    gc.disable()
    try:
        loader.check_rules(rules_file)
        assert seen == [False]
        assert not gc.isenabled()
    finally:
        gc.enable()
