"""Memory holds bounded caches only: the same decisions, in the same order, whatever the caches' sizes.

The profile cache, the customers' timer entries and the timer window are tiny here and the batches
short, so customers leave memory and come back from the store all the time, and the timer window is
refilled again and again. The output must not change by one byte (docs/running.md, "Memory").
"""
from __future__ import annotations

import gc
import io
import itertools
from datetime import datetime, timezone

import pytest

from bench.datasets import cdnow_events
from rulecrm.app import replay as replay_module
from rulecrm.app import session as session_module
from rulecrm.app.replay import replay
from rulecrm.app.session import Input, Session
from rulecrm.engine import timerbook
from rulecrm.engine.profile import Profile
from rulecrm.sources.reader import read_events

CDNOW_LINES = 4_000


@pytest.fixture(scope="module")
def cdnow_head(repo, tmp_path_factory):
    with open(repo / "tests" / "data" / "cdnow" / "CDNOW_master.txt", encoding="ascii") as source:
        head = "".join(itertools.islice(source, CDNOW_LINES + 1))
    path = tmp_path_factory.mktemp("cdnow") / "head.jsonl"
    cdnow_events(io.StringIO(head), path)
    return path


def replayed(rules, events, state=None, until=None) -> str:
    out = io.StringIO()
    replay(rules, events, out=out, backend_name="python", state=state, until=until)
    return out.getvalue()


def shrink_memory(monkeypatch, customers=3, window=4, batch=37):
    monkeypatch.setenv("RULECRM_CACHE_CUSTOMERS", str(customers))
    monkeypatch.setattr(timerbook, "WINDOW", window)
    monkeypatch.setattr(replay_module, "BATCH", batch)
    monkeypatch.setattr(session_module, "TIMERS_PER_STEP", 2)  # the end of a replay fires timers in many steps


@pytest.mark.parametrize("keep_state", [False, True], ids=["scratch", "state"])
def test_cdnow_decisions_do_not_depend_on_the_cache_sizes(repo, cdnow_head, monkeypatch, tmp_path, keep_state):
    rules = repo / "rules" / "cdnow"
    expected = replayed(rules, cdnow_head, state=tmp_path / "big.db" if keep_state else None)
    shrink_memory(monkeypatch)
    got = replayed(rules, cdnow_head, state=tmp_path / "small.db" if keep_state else None)
    assert expected.count("\n") > 3_000
    assert got == expected


@pytest.mark.parametrize("keep_state, step", [(False, 50), (True, 20)], ids=["scratch", "state"])
def test_a_replay_that_can_resume_commits_smaller_steps_than_one_without_state(
        repo, cdnow_head, monkeypatch, tmp_path, keep_state, step):
    """A kept state commits at most RESUMABLE_BATCH events at a time (a stop loses less work); a replay
    without state, which cannot resume, commits BATCH (each busy profile is written less often)."""
    monkeypatch.setattr(replay_module, "BATCH", 50)
    monkeypatch.setattr(replay_module, "RESUMABLE_BATCH", 20)
    sizes = []
    apply = Session.apply

    def counting_apply(self, inputs, **kwargs):
        inputs = list(inputs)
        sizes.append(len(inputs))
        return apply(self, inputs, **kwargs)

    monkeypatch.setattr(Session, "apply", counting_apply)
    replayed(repo / "rules" / "cdnow", cdnow_head, state=tmp_path / "state.db" if keep_state else None)
    assert len(sizes) > 2 and set(sizes[:-1]) == {step} and 0 < sizes[-1] <= step


def test_quiet_hours_caps_and_escalations_do_not_depend_on_the_cache_sizes(repo, monkeypatch):
    rules = repo / "rules" / "tea-shop"
    events = rules / "events.jsonl"
    until = datetime(2026, 12, 31, tzinfo=timezone.utc)
    expected = replayed(rules, events, until=until)
    assert '"deferred"' in expected or '"suppressed"' in expected
    shrink_memory(monkeypatch, customers=1, window=1, batch=3)
    assert replayed(rules, events, until=until) == expected


def test_caches_stay_bounded_while_customers_come_and_go(repo, cdnow_head, monkeypatch):
    capacity, batch = 20, 100
    monkeypatch.setenv("RULECRM_CACHE_CUSTOMERS", str(capacity))
    monkeypatch.setattr(timerbook, "WINDOW", 8)
    rules = repo / "rules" / "cdnow"
    session = Session.open(rules, None, backend_name="python")
    with session:
        lines = read_events(cdnow_head, default_tz=session.ruleset.shop.timezone)
        largest = 0
        while chunk := list(itertools.islice(lines, batch)):
            session.apply([Input("cdnow", line_no, event) for line_no, event in chunk])
            engine = session.engine
            largest = max(largest, len(engine.profiles), len(engine.timers._customers))
            assert len(engine.timers._window) <= 2 * 8
    # the engine flushes as soon as a cache outgrows its capacity, mid-step if need be
    assert capacity < largest <= 2 * capacity + 2


def test_a_decision_is_taken_once_even_when_its_key_comes_back_after_a_flush(tmp_path, monkeypatch):
    """The birthday greeting fires at 09:00 Shanghai; a later upsert moves the customer to Berlin,
    where 09:00 is still ahead on the same day. The greeting of that year was decided already, so it
    is not decided again, whether or not the store was written in between (each line its own step)."""
    from shop_streams import RULES

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "shop.yaml").write_text(RULES, encoding="utf-8")
    events = tmp_path / "events.jsonl"
    upsert = '{{"id": "{id}", "type": "customer.upserted", "customer_id": "c1", "at": "{at}", "data": ' \
             '{{"birthday": "03-02", "timezone": "{zone}"}}}}\n'
    events.write_text(upsert.format(id="u1", at="2026-03-01T10:00:00+00:00", zone="Asia/Shanghai")
                      + upsert.format(id="u2", at="2026-03-02T02:16:00+00:00", zone="Europe/Berlin"))
    until = datetime(2026, 3, 13, tzinfo=timezone.utc)
    together = replayed(rules, events, until=until)
    monkeypatch.setattr(replay_module, "BATCH", 1)
    apart = replayed(rules, events, until=until)
    assert apart == together
    assert together.count('"rule":"birthday"') == 1


def test_sessions_one_after_another_keep_no_closed_sessions_customers(repo, cdnow_head):
    """The partitions of an in-process replay are sessions opened one after another. A closed
    session's customers must leave memory when it closes, not at the next full collection, which
    runs rarely while sessions are open (`rulecrm.app.collector`)."""
    rules = repo / "rules" / "cdnow"

    def profiles_in_memory() -> int:
        return sum(isinstance(item, Profile) for item in gc.get_objects())

    before = profiles_in_memory()
    was_enabled = gc.isenabled()
    gc.disable()  # as while another session of the process is open: no cycle is collected
    try:
        for _partition in range(3):
            with Session.open(rules, None, backend_name="python") as session:
                lines = read_events(cdnow_head, default_tz=session.ruleset.shop.timezone)
                session.apply([Input("cdnow", line_no, event) for line_no, event in itertools.islice(lines, 500)])
                assert profiles_in_memory() - before > 100  # the session did hold its customers
            assert profiles_in_memory() == before
    finally:
        if was_enabled:
            gc.enable()
