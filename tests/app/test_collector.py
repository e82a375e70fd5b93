"""While sessions are open, CPython starts no full collection itself (young ones go on), and full
collections are paced by their cost."""
from __future__ import annotations

import gc
import weakref

import pytest

from rulecrm.app import collector
from rulecrm.app.session import Session
from rulecrm.errors import StorageError
from rulecrm.state.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Node:
    pass


def cycle_with_watch() -> weakref.ref:
    """Garbage that only the cyclic collector can free; the weak reference tells when it went."""
    node = Node()
    node.self = node
    return weakref.ref(node)


@pytest.fixture
def collector_enabled():
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()  # a test that turned it off must not leave it off for the tests after it
    else:
        gc.disable()


def full_collections_automatic() -> bool:
    return gc.get_threshold()[2] < collector.NO_AUTOMATIC_FULL


def test_sessions_pause_automatic_full_collections_until_the_last_one_closes(repo, collector_enabled):
    rules = repo / "rules" / "tea-shop"
    thresholds = gc.get_threshold()
    first = Session.open(rules)
    assert not full_collections_automatic() and gc.isenabled()
    assert gc.get_threshold()[:2] == thresholds[:2]  # the young generations are collected as before
    second = Session.open(rules)
    first.close()
    assert not full_collections_automatic()  # closed out of order: the other session is still open
    second.close()
    assert gc.get_threshold() == thresholds and gc.isenabled()
    second.close()  # closing twice does not count twice
    assert gc.get_threshold() == thresholds


def test_young_cycles_are_collected_during_a_step(repo, collector_enabled):
    """Cyclic garbage made while a step runs goes with CPython's young collections, without waiting for
    the step's end: a library that makes millions of cycles in one step must not hold them all."""
    with Session.open(repo / "rules" / "tea-shop"):
        gc.collect()
        watches = [cycle_with_watch() for _ in range(10 * gc.get_threshold()[0])]
        keep = [[] for _ in range(10 * gc.get_threshold()[0])]  # allocations that trigger young collections
        assert sum(watch() is None for watch in watches) > len(watches) // 2
        assert len(keep) == len(watches)


def test_a_session_that_fails_to_open_leaves_the_collector_as_it_was(repo, collector_enabled, monkeypatch):
    def full_disk(self, key, value):
        raise StorageError("disk full", kind="full", path=self.path)

    monkeypatch.setattr(Store, "set_meta", full_disk)
    thresholds = gc.get_threshold()
    with pytest.raises(StorageError):
        Session.open(repo / "rules" / "tea-shop")
    assert gc.isenabled() and gc.get_threshold() == thresholds


def test_a_program_that_turned_the_collector_off_keeps_it_off(repo, collector_enabled):
    gc.disable()
    session = Session.open(repo / "rules" / "tea-shop")
    watch = cycle_with_watch()
    budget = collector.BudgetedCollector(clock=Clock())
    assert budget.after_step() is False
    session.close()
    assert not gc.isenabled()
    assert watch() is not None
    gc.collect()


def test_full_collections_are_paced_by_their_cost(collector_enabled):
    collector.pause_automatic()
    try:
        clock = Clock()
        budget = collector.BudgetedCollector(ratio=20, every=0, clock=clock)
        watch = cycle_with_watch()
        clock.now += 20 * collector.MIN_COST - 0.01
        assert budget.after_step() is False  # not yet: less CPU time than the budget since the start
        assert watch() is not None
        clock.now += 0.02
        assert budget.after_step() is True
        assert watch() is None  # the cycle was collected
        assert budget.collections == 1
        assert budget.after_step() is False  # the budget starts again from that collection
    finally:
        collector.resume_automatic()
    assert gc.isenabled()


def test_full_collections_wait_for_a_minimum_of_cpu_time(collector_enabled):
    collector.pause_automatic()
    try:
        clock = Clock()
        budget = collector.BudgetedCollector(ratio=20, every=120, clock=clock)
        clock.now += 119  # far past 20x the cost, not yet 120 s
        assert budget.after_step() is False and budget.collections == 0
        clock.now += 1
        assert budget.after_step() is True and budget.collections == 1
    finally:
        collector.resume_automatic()


def test_the_sessions_of_a_process_share_one_collector(repo, collector_enabled):
    rules = repo / "rules" / "tea-shop"
    with Session.open(rules) as first, Session.open(rules) as second:
        assert first._collector is second._collector is not None
    assert collector._shared is None


def test_a_replay_collects_the_cycles_its_steps_leave(repo, collector_enabled, monkeypatch, tmp_path):
    """The paced collections run between a session's steps, so garbage cycles do not outlive a run."""
    from rulecrm.app import replay as replay_module
    from rulecrm.app.replay import replay

    watches = []
    original = collector.BudgetedCollector.after_step

    def after_step(self):
        watches.append(cycle_with_watch())  # a cycle left by every step
        return original(self)

    monkeypatch.setattr(collector, "COST_RATIO", 0)  # every step is within the budget
    monkeypatch.setattr(collector, "FULL_EVERY", 0)
    monkeypatch.setattr(collector.BudgetedCollector, "after_step", after_step)
    monkeypatch.setattr(replay_module, "BATCH", 5)
    rules = repo / "rules" / "tea-shop"
    with open(tmp_path / "out.jsonl", "w", encoding="utf-8") as out:
        replay(rules, rules / "events.jsonl", out=out, backend_name="python")
    assert len(watches) > 3
    assert all(watch() is None for watch in watches)
    assert gc.isenabled()
