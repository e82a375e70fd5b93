"""Quiet hours across DST changes: a held send goes at the first instant at or after it was due whose
local time is outside the window — never earlier, never later — checked against a minute-by-minute
reference around both transitions of zones with 1 h and 30 min shifts, and one without DST."""
from __future__ import annotations

import io
import json
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from helpers import ev, write_events, write_rules
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rulecrm.app.replay import replay
from rulecrm.engine.quiet import quiet_until

MINUTE = timedelta(minutes=1)
UTC = timezone.utc

# (zone, instant of an offset change in 2026, UTC); Shanghai has none: two ordinary nights.
TRANSITIONS = [
    ("America/New_York", datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),  # 02:00 EST -> 03:00 EDT
    ("America/New_York", datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),  # 02:00 EDT -> 01:00 EST
    ("Europe/London", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    ("Europe/London", datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2026, 4, 4, 15, 0, tzinfo=UTC)),  # 02:00 +11 -> 01:30 +10:30
    ("Australia/Lord_Howe", datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),  # 02:00 +10:30 -> 02:30 +11
    ("Asia/Shanghai", datetime(2026, 3, 8, 18, 0, tzinfo=UTC)),
    ("Asia/Shanghai", datetime(2026, 11, 1, 17, 0, tzinfo=UTC)),
]

WINDOWS = [
    "22:00-08:00", "01:00-01:30", "01:00-02:00", "01:30-02:15", "02:00-03:00", "02:15-02:45",
    "00:00-02:00", "01:45-03:00", "23:00-01:15", "01:59-02:01", "02:30-01:00",
]

SPAN = timedelta(hours=30)  # either side of the transition: the nights before, of and after it


def window_of(text: str) -> tuple[time, time]:
    start, end = text.split("-")
    return time.fromisoformat(start), time.fromisoformat(end)


def local_quiet(instant: datetime, zone, window) -> bool:
    """What the customer's clock says, read off zoneinfo, against the window, with plain comparisons."""
    clock = instant.astimezone(zone)
    at = (clock.hour, clock.minute, clock.second, clock.microsecond)
    start = (window[0].hour, window[0].minute, 0, 0)
    end = (window[1].hour, window[1].minute, 0, 0)
    return start <= at < end if start < end else (at >= start or at < end)


def reference_release(due: datetime, zone, window) -> datetime | None:
    """Brute force: the first instant >= due whose local time is outside the window, minute by minute.

    In these zones windows edges and offset changes fall on whole UTC minutes, so after `due`
    itself only whole minutes can be the first instant outside.
    """
    if not local_quiet(due, zone, window):
        return None
    minute = due.replace(second=0, microsecond=0)
    if minute < due:
        minute += MINUTE
    for _ in range(3 * 24 * 60):
        if not local_quiet(minute, zone, window):
            return minute
        minute += MINUTE
    raise AssertionError("no instant outside the window within three days")


def test_the_transitions_are_real():
    for name, instant in TRANSITIONS:
        zone = ZoneInfo(name)
        before, after = (instant - timedelta(seconds=1)).astimezone(zone), instant.astimezone(zone)
        assert (before.utcoffset() != after.utcoffset()) == (name != "Asia/Shanghai"), (name, instant)


def check(due, zone, window):
    released = quiet_until(due, window, zone)
    expected = reference_release(due, zone, window)
    assert released == expected, (due.astimezone(zone), released and released.astimezone(zone),
                                  expected and expected.astimezone(zone))
    if released is not None:
        assert released >= due and not local_quiet(released, zone, window)
        assert isinstance(released.tzinfo, timezone)  # a fixed offset: exact elapsed-time arithmetic


@pytest.mark.parametrize("name,transition", TRANSITIONS, ids=[f"{n}@{t:%m-%d}" for n, t in TRANSITIONS])
def test_every_minute_around_a_transition(name, transition):
    """Each window, every minute from 30 h before the offset change to 30 h after."""
    zone = ZoneInfo(name)
    # The reference once per window, swept backwards: the next minute outside at or after each minute.
    count = int(2 * SPAN / MINUTE)
    minutes = [transition - SPAN + i * MINUTE for i in range(count + 3 * 24 * 60)]
    for text in WINDOWS:
        window = window_of(text)
        outside = [not local_quiet(m, zone, window) for m in minutes]
        next_outside = [None] * len(minutes)
        following = None
        for i in range(len(minutes) - 1, -1, -1):
            if outside[i]:
                following = minutes[i]
            next_outside[i] = following
        for i in range(count):
            due = minutes[i]
            expected = None if outside[i] else next_outside[i]
            released = quiet_until(due, window, zone)
            assert released == expected, (text, due.astimezone(zone), released and released.astimezone(zone),
                                          expected and expected.astimezone(zone))


clock_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 0, 15, 30, 45, 59, 1, 29, 31]))


@settings(max_examples=300)
@given(
    at=st.sampled_from(TRANSITIONS),
    offset=st.integers(-int(SPAN.total_seconds()), int(SPAN.total_seconds())),
    micros=st.sampled_from([0, 0, 1, 999_999]),
    start=clock_times,
    end=clock_times,
)
@example(at=TRANSITIONS[1], offset=15 * 60, micros=0, start=time(1, 0), end=time(1, 30))  # the second 01:15
def test_release_is_the_first_instant_outside_the_window(at, offset, micros, start, end):
    """Any window, any instant (to the microsecond) near a transition: the reference's answer."""
    if start == end:
        return  # `check` rejects an empty window
    name, transition = at
    due = transition + timedelta(seconds=offset, microseconds=micros)
    check(due, ZoneInfo(name), (start, end))


def test_the_second_0115_is_held_until_0130_est():
    """The bug: 01:15 EST (the repeated hour) was released at 01:30 EDT, 45 minutes before it was due."""
    zone = ZoneInfo("America/New_York")
    due = datetime(2026, 11, 1, 1, 15, fold=1, tzinfo=zone)
    released = quiet_until(due, window_of("01:00-01:30"), zone)
    assert released == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert released.isoformat() == "2026-11-01T01:30:00-05:00"


def test_the_spring_forward_gap_releases_when_the_clock_jumps_out():
    """01:50 EST in a 01:00-02:30 window: at 02:00 EST the clock reads 03:00 EDT, outside already."""
    zone = ZoneInfo("America/New_York")
    due = datetime(2026, 3, 8, 1, 50, tzinfo=zone)
    assert quiet_until(due, window_of("01:00-02:30"), zone).isoformat() == "2026-03-08T03:00:00-04:00"
    # A window wholly inside the gap holds nothing that night.
    night = [datetime(2026, 3, 8, 5, 0, tzinfo=UTC) + i * MINUTE for i in range(4 * 60)]
    assert [quiet_until(m, window_of("02:15-02:45"), zone) for m in night] == [None] * len(night)


def test_fall_back_out_of_the_window_by_a_jump():
    """01:50 EDT in 01:45-03:00: at 02:00 EDT the clock goes back to 01:00 EST, outside the window."""
    zone = ZoneInfo("America/New_York")
    due = datetime(2026, 11, 1, 1, 50, tzinfo=zone)
    assert quiet_until(due, window_of("01:45-03:00"), zone).isoformat() == "2026-11-01T01:00:00-05:00"


RULES = """
shop: {timezone: America/New_York, quiet_hours: "01:00-01:30"}
rules:
  - id: promo
    on: chat.received
    notify: {to: customer, kind: marketing, template: "promo {event.text}"}
"""


@pytest.mark.parametrize("backend", ["python", "durable"])
def test_the_engine_holds_a_send_of_the_repeated_hour_until_it_is_due(tmp_path, backend):
    events = [
        ev("chat.received", "c1", "2026-11-01T01:15:00-04:00", id="first", text="first"),  # 01:15 EDT
        ev("chat.received", "c1", "2026-11-01T01:15:00-05:00", id="second", text="second"),  # 01:15 EST
        ev("chat.received", "c1", "2026-11-01T01:40:00-04:00", id="between", text="between"),  # 01:40 EDT
    ]
    out = io.StringIO()
    replay(write_rules(tmp_path, RULES), write_events(tmp_path, events), out=out, backend_name=backend,
           until=datetime(2026, 11, 2, tzinfo=UTC))
    actions = {a["message"]: a for a in map(json.loads, out.getvalue().splitlines())}
    assert {m: (a["status"], a["sent_at"]) for m, a in actions.items()} == {
        "promo first": ("sent", "2026-11-01T01:30:00-04:00"),
        "promo between": ("sent", "2026-11-01T01:40:00-04:00"),
        "promo second": ("sent", "2026-11-01T01:30:00-05:00"),
    }
    for action in actions.values():
        assert datetime.fromisoformat(action["sent_at"]) >= datetime.fromisoformat(action["due_at"])
