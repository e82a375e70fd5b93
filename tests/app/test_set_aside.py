"""Defence in depth: an event (or timer) the engine fails on is rolled back alone, dead-lettered, and the run goes on.

The failure is injected into the real engine (a profile update that raises for marked events, a
timer firing that raises for one customer), as a bug in rulecrm or a plugin would. Every run must
then give exactly the actions of the same input without the failing item.
"""
from __future__ import annotations

import io
import json
import sqlite3

import pytest

from rulecrm.app.deadletters import retry_dead_letters
from rulecrm.app.replay import replay
from rulecrm.app.runner import Runner
from rulecrm.engine.core import Engine
from rulecrm.engine.profile import Profile
from rulecrm.testing import files

RULES = """
rules:
  - id: thanks
    on: order.placed
    notify: {to: customer, channel: console, kind: service, template: "thanks {event.order_id}"}
  - id: follow-up
    on: order.placed
    after: 1d
    notify: {to: customer, channel: console, kind: service, template: "how is {event.order_id}?"}
  - id: regular
    when: customer.order_count >= 2
    tag: regular
"""


def order(n, customer, day, **extra):
    return {"id": f"o-{n}", "type": "order.placed", "customer_id": customer,
            "at": f"2026-03-{day:02d}T10:00:00+00:00", "data": {"order_id": f"o-{n}", "amount": 10, **extra}}


EVENTS = [order(1, "c-1", 1), order(2, "c-2", 1), order(3, "c-1", 2, boom=True), order(4, "c-2", 3),
          order(5, "c-1", 4), order(6, "c-3", 5)]
BOOM_LINE = 3


@pytest.fixture
def failing_profile_update(monkeypatch):
    """Profile.apply raises for events marked `boom`, as a bug would."""
    original = Profile.apply

    def apply(self, event, **kwargs):
        if event.data.get("boom"):
            raise RuntimeError("injected failure")
        return original(self, event, **kwargs)

    monkeypatch.setattr(Profile, "apply", apply)


@pytest.fixture(params=["python", "durable"])
def backend(request):
    return request.param


def replay_actions(tmp_path, events, *, backend, state=None, name="events.jsonl"):
    rules = files.write_rules(tmp_path, RULES)
    path = files.write_events(tmp_path / name, events)
    out, rejected = io.StringIO(), []
    summary = replay(rules, path, state=state, out=out, backend_name=backend,
                     on_rejected=lambda line_no, error: rejected.append((line_no, error)))
    return [json.loads(text) for text in out.getvalue().splitlines()], summary, rejected


def expected_without(tmp_path, events, skipped, backend):
    clean = [event for n, event in enumerate(events, 1) if n not in skipped]
    actions, _summary, _rejected = replay_actions(tmp_path / "clean", clean, backend=backend)
    return actions


@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no-state"])
def test_replay_sets_the_failing_event_aside_and_decides_the_rest_exactly(tmp_path, failing_profile_update,
                                                                          with_state, backend):
    (tmp_path / "clean").mkdir()
    expected = expected_without(tmp_path, EVENTS, {BOOM_LINE}, backend)
    state = str(tmp_path / "state.db") if with_state else None
    actions, summary, rejected = replay_actions(tmp_path, EVENTS, state=state, backend=backend)
    assert actions == expected  # same actions, in the same order, none twice
    assert (summary.applied, summary.rejected) == (len(EVENTS) - 1, 1)
    [(line_no, error)] = rejected  # reported once, with its line number
    assert line_no == BOOM_LINE and "RuntimeError: injected failure" in error
    if with_state:
        with sqlite3.connect(state) as db:
            [(raw, stored_error)] = db.execute("SELECT raw, error FROM dead_letters").fetchall()
            applied = {row[0] for row in db.execute("SELECT id FROM events")}
        assert json.loads(raw)["id"] == "o-3" and "injected failure" in stored_error
        assert applied == {f"o-{n}" for n in (1, 2, 4, 5, 6)}


def test_a_second_replay_on_the_state_adds_nothing(tmp_path, failing_profile_update, backend):
    state = str(tmp_path / "state.db")
    replay_actions(tmp_path, EVENTS, state=state, backend=backend)
    actions, summary, _rejected = replay_actions(tmp_path, EVENTS, state=state, backend=backend)
    assert actions == [] and summary.duplicates == len(EVENTS) - 1
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (1,)


@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no-state"])
def test_a_timer_whose_firing_fails_is_set_aside_and_the_others_fire(tmp_path, monkeypatch, with_state, backend):
    (tmp_path / "clean").mkdir()
    expected = [a for a in expected_without(tmp_path, EVENTS, set(), backend)
                if not (a["rule"] == "follow-up" and a["customer_id"] == "c-2")]
    original = Engine._fire_delayed

    def fire(self, timer):
        if timer.customer_id == "c-2":
            raise ZeroDivisionError("injected timer failure")
        return original(self, timer)

    monkeypatch.setattr(Engine, "_fire_delayed", fire)
    state = str(tmp_path / "state.db") if with_state else None
    actions, _summary, rejected = replay_actions(tmp_path, EVENTS, state=state, backend=backend)
    assert actions == expected
    assert [line_no for line_no, _error in rejected] == [0, 0]  # c-2's two follow-ups, each set aside once
    assert all("injected timer failure" in error for _line_no, error in rejected)
    if with_state:
        with sqlite3.connect(state) as db:
            rows = db.execute("SELECT source, raw FROM dead_letters").fetchall()
        assert [source for source, _raw in rows] == ["timer", "timer"]
        assert {json.loads(raw)["event"]["id"] for _source, raw in rows} == {"o-2", "o-4"}


def test_the_runner_sets_the_failing_line_aside_and_goes_on(tmp_path, failing_profile_update, backend):
    rules = files.write_rules(tmp_path, RULES)
    events = files.write_events(tmp_path / "events.jsonl", EVENTS)
    out, messages = io.StringIO(), []
    runner = Runner(rules, str(tmp_path / "state.db"), sources=[f"jsonl:{events}"], out=out, backend_name=backend,
                    on_message=messages.append, clock=lambda: 1_900_000_000.0)
    runner.start()
    try:
        runner.run(once=True)
    finally:
        runner.close()
    assert runner.stats["applied"] == len(EVENTS) - 1 and runner.stats["rejected"] == 1
    assert [m for m in messages if ": rejected: " in m] == [
        m for m in messages if f":{BOOM_LINE}: rejected: the engine failed on this input: RuntimeError" in m]
    assert len([m for m in messages if ": rejected: " in m]) == 1
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM events").fetchone() == (len(EVENTS) - 1,)
    decided = [json.loads(text) for text in out.getvalue().splitlines()]
    assert len({a["key"] for a in decided}) == len(decided)


def test_retry_keeps_a_corrected_line_the_engine_still_fails_on_with_its_error(tmp_path, monkeypatch):
    state = str(tmp_path / "state.db")
    bad = dict(order(7, "c-4", 6), at="not a time")
    _actions, summary, _rejected = replay_actions(tmp_path, EVENTS[:2] + [bad, order(8, "c-5", 6, boom=True)],
                                                  state=state, backend="python")
    assert summary.rejected == 1
    original = Profile.apply

    def apply(self, event, **kwargs):
        if event.customer_id == "c-4":
            raise RuntimeError("still failing")
        return original(self, event, **kwargs)

    monkeypatch.setattr(Profile, "apply", apply)
    with sqlite3.connect(state) as db:
        [(dead_id,)] = db.execute("SELECT id FROM dead_letters").fetchall()
    fixed = json.dumps(order(7, "c-4", 6))
    result = retry_dead_letters(state, corrections={dead_id: fixed})
    assert (result.applied, result.still_rejected) == (0, 1)
    assert "still failing" in result.remaining[0]["error"]
    with sqlite3.connect(state) as db:
        [(error,)] = db.execute("SELECT error FROM dead_letters").fetchall()
    assert "still failing" in error
