"""Concurrent delivery: across channels, within a channel up to its `concurrency`, one customer in order.

Real threads and, for the webhook, a real HTTP server on 127.0.0.1 that answers slowly. Timing is
never asserted here (bench/bench_delivery.py measures B7); what is asserted is what the dispatcher
promises: how many sends are in flight at once, the order of one customer's messages on one channel,
that a slow channel does not hold back the others, and that a rate limit stays exact.
"""
from __future__ import annotations

import io
import json
import random
import threading
import time

import pytest
from helpers import ev, write_events, write_rules

from bench.bench_delivery import SlowEndpoint
from rulecrm import plugins
from rulecrm.app.replay import replay
from rulecrm.channels import DELIVERED, ChannelType, Delivery
from rulecrm.channels.ratelimit import RateLimiter
from rulecrm.hookspecs import hookimpl
from rulecrm.rulefile.channels import DEFAULT_CONCURRENCY


@pytest.fixture
def slow_receiver():
    receiver = SlowEndpoint(delay=0.05)  # the endpoint of bench/bench_delivery.py (B7)
    yield receiver
    receiver.close()


def orders(customers: int, per_customer: int = 1) -> list[dict]:
    events = []
    for n in range(per_customer):
        for c in range(customers):
            events.append(ev("order.placed", f"c-{c}", f"2026-03-01T10:{n:02d}:{c % 60:02d}Z", id=f"o-{c}-{n}",
                             sku="tea", amount=1))
    return sorted(events, key=lambda e: e["at"])


def dispatch_replay(rules, events, **kwargs):
    out = io.StringIO()
    summary = replay(rules, events, out=out, backend_name="python", dispatch=True, **kwargs)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def webhook_rules(tmp_path, url, concurrency=None):
    setting = f", concurrency: {concurrency}" if concurrency else ""
    return write_rules(tmp_path, f"""
        shop: {{timezone: UTC}}
        channels:
          hook: {{type: webhook, url: "{url}", timeout: 30{setting}}}
        rules:
          - id: thanks
            on: order.placed
            notify: {{to: customer, channel: hook, kind: service, template: "thanks {{event.id}}"}}
    """)


@pytest.mark.parametrize("concurrency", [None, 3], ids=["default", "three"])
def test_a_channel_has_at_most_its_concurrency_in_flight_and_uses_it(tmp_path, slow_receiver, concurrency):
    rules = webhook_rules(tmp_path, slow_receiver.url, concurrency)
    events = write_events(tmp_path, orders(customers=60))
    actions, summary = dispatch_replay(rules, events)
    assert summary.undelivered == 0 and len(slow_receiver.keys) == 60
    assert {a["status"] for a in actions if a["rule"] == "thanks"} == {"sent"}
    # 60 customers answered in 50 ms each: the channel's workers are all busy at some moment
    assert slow_receiver.most_at_once == (concurrency or DEFAULT_CONCURRENCY)


def test_one_customers_messages_on_one_channel_go_in_decision_order(tmp_path, slow_receiver):
    rules = webhook_rules(tmp_path, slow_receiver.url)
    events = write_events(tmp_path, orders(customers=8, per_customer=6))
    _actions, summary = dispatch_replay(rules, events)
    assert summary.undelivered == 0 and len(slow_receiver.keys) == 48
    for c in range(8):
        mine = [key for key in slow_receiver.keys if key.startswith(f"thanks|c-{c}|")]
        assert mine == [f"thanks|c-{c}|o-{c}-{n}" for n in range(6)]  # the order they were decided in
    assert slow_receiver.most_at_once > 1  # while customers ran side by side


class Recorder:
    """Channel types `fast` and `slow` (answers after `slow_seconds`), each recording when it answered."""

    def __init__(self, slow_seconds: float):
        self.slow_seconds = slow_seconds
        self.answered: dict[str, list[float]] = {"fast": [], "slow": []}

    @hookimpl
    def rulecrm_channel_types(self):
        return [ChannelType("fast", lambda config: _Timed(self, "fast", 0.0), thread_safe=True),
                ChannelType("slow", lambda config: _Timed(self, "slow", self.slow_seconds), thread_safe=True)]


class _Timed:
    def __init__(self, recorder, name, delay):
        self.recorder, self.name, self.delay = recorder, name, delay

    def send(self, message):
        time.sleep(self.delay)
        self.recorder.answered[self.name].append(time.monotonic())
        return Delivery(DELIVERED)

    def close(self):
        pass


def test_a_slow_channel_does_not_hold_back_the_others(tmp_path):
    recorder = Recorder(slow_seconds=0.5)
    rules = write_rules(tmp_path, """
        shop: {timezone: UTC}
        channels:
          fast: {type: fast}
          slow: {type: slow, concurrency: 1}
        rules:
          - id: to-slow
            on: order.placed
            notify: {to: customer, channel: slow, kind: service, template: slow}
          - id: to-fast
            on: order.placed
            notify: {to: customer, channel: fast, kind: service, template: fast}
    """)
    events = write_events(tmp_path, orders(customers=4))
    manager = plugins.build_plugin_manager(load_entry_points=False, extra=[recorder])
    started = time.monotonic()
    _actions, summary = dispatch_replay(rules, events, plugin_manager=manager)
    assert summary.undelivered == 0
    assert len(recorder.answered["fast"]) == 4 and len(recorder.answered["slow"]) == 4
    # the slow channel takes 4 x 0.5 s one send at a time; every fast send was answered before its first
    assert max(recorder.answered["fast"]) < min(recorder.answered["slow"])
    assert min(recorder.answered["slow"]) - started >= 0.5


def test_concurrent_senders_never_exceed_a_rate_limit():
    """Many threads after one bucket's tokens at the same instant: exactly `per_minute` get one."""
    class NoTime(Exception):
        pass

    def sleep(seconds):
        raise NoTime  # a sender that would have to wait gives up instead: the test counts who did not

    limiter = RateLimiter(clock=lambda: 1000.0, sleep=sleep)
    outcomes: list[str] = []
    gate = threading.Barrier(40)

    def sender():
        gate.wait()
        try:
            limiter.acquire(("webhook", "robot-1"), 7)
            outcomes.append("sent")
        except NoTime:
            outcomes.append("waited")

    threads = [threading.Thread(target=sender) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("sent") == 7 and outcomes.count("waited") == 33


def test_tokens_are_settled_by_the_send_that_spent_them():
    """Concurrent sends finish in any order: each one's tokens count from its own end."""
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0], sleep=lambda s: None)
    _waited, first = limiter.take("b", 2, 1)
    _waited, second = limiter.take("b", 2, 1)
    now[0] = 1010.0
    limiter.settle("b", second)  # the later send finished first
    now[0] = 1020.0
    limiter.settle("b", first)
    now[0] = 1069.0
    assert limiter.delay("b", 2) == pytest.approx(1.0)  # the token settled at 1010 comes back at 1070
    now[0] = 1070.0
    assert limiter.delay("b", 2) == 0.0


def channel_plugin(type_name: str, factory) -> object:
    """A plugin providing one thread-safe channel type."""
    class Plugin:
        @hookimpl
        def rulecrm_channel_types(self):
            return [ChannelType(type_name, factory, thread_safe=True)]

    return Plugin()


def test_random_delays_keep_every_customers_order(tmp_path):
    """A channel answering after random delays, many customers with several messages each."""
    rng = random.Random(5)
    seen: list[str] = []

    class Jittery:
        def __init__(self, config):
            pass

        def send(self, message):
            time.sleep(rng.uniform(0, 0.01))
            seen.append(message.key)
            return Delivery(DELIVERED)

        def close(self):
            pass

    rules = write_rules(tmp_path, """
        shop: {timezone: UTC}
        channels:
          j: {type: jittery, concurrency: 8}
        rules:
          - id: thanks
            on: order.placed
            notify: {to: customer, channel: j, kind: service, template: hi}
    """)
    events = write_events(tmp_path, orders(customers=20, per_customer=5))
    manager = plugins.build_plugin_manager(load_entry_points=False, extra=[channel_plugin("jittery", Jittery)])
    _actions, summary = dispatch_replay(rules, events, plugin_manager=manager)
    assert summary.undelivered == 0 and len(seen) == 100
    for c in range(20):
        assert [k for k in seen if k.startswith(f"thanks|c-{c}|")] == [f"thanks|c-{c}|o-{c}-{n}" for n in range(5)]


def test_a_backlog_stays_in_the_store_and_leaves_other_channels_in_reach(tmp_path):
    """A channel is handed at most HANDED_PER_SLOT x its concurrency actions at a time: a backlog of a
    slow channel is not read at every pump, and the actions of another channel decided after it start
    in the first pump."""
    from rulecrm.app.session import Input, Session
    from rulecrm.channels.dispatch import HANDED_PER_SLOT
    from rulecrm.events import Event

    release = threading.Event()

    class Held:
        def __init__(self, config):
            pass

        def send(self, message):
            release.wait(30)
            return Delivery(DELIVERED)

        def close(self):
            pass

    class Plugin:
        @hookimpl
        def rulecrm_channel_types(self):
            return [ChannelType("held", Held, thread_safe=True), ChannelType("fast", lambda config: Held(config),
                                                                            thread_safe=True)]

    rules = write_rules(tmp_path, """
        shop: {timezone: UTC}
        channels:
          slow: {type: held, concurrency: 2}
          quick: {type: fast, concurrency: 3}
        rules:
          - id: to-slow
            on: order.placed
            when: event.sku == "s"
            notify: {to: customer, channel: slow, kind: service, template: slow}
          - id: to-quick
            on: order.placed
            when: event.sku == "q"
            notify: {to: customer, channel: quick, kind: service, template: quick}
    """)
    events = [ev("order.placed", f"c-{n}", f"2026-03-01T10:{n // 60:02d}:{n % 60:02d}Z", id=f"s-{n}", sku="s")
              for n in range(300)]
    events += [ev("order.placed", f"q-{n}", "2026-03-01T11:00:00Z", id=f"q-{n}", sku="q") for n in range(5)]
    manager = plugins.build_plugin_manager(load_entry_points=False, extra=[Plugin()])
    with Session.open(rules, tmp_path / "state.db", manager=manager, deliver=True) as session:
        session.apply([Input("test", n, Event.from_dict(e, default_tz=None)) for n, e in enumerate(events, 1)])
        dispatcher = session.dispatcher
        store = session.store
        read, decoded = [], []
        waiting, from_text = store.iter_waiting_actions, store.action_from_text

        def counting_waiting(*args, **kwargs):
            for head in waiting(*args, **kwargs):
                read.append(head)
                yield head

        def counting_from_text(text):
            decoded.append(text)
            return from_text(text)

        store.iter_waiting_actions, store.action_from_text = counting_waiting, counting_from_text
        started = dispatcher.start_due()
        handed = dict(dispatcher._lanes.handed)
        assert handed == {"slow": HANDED_PER_SLOT * 2, "quick": 5}  # every quick one, though decided last
        assert started == HANDED_PER_SLOT * 2 + 5
        # only the handed actions are decoded, and the backlog is read no further than the action at
        # which the slow channel filled up
        assert len(decoded) == started
        assert len(read) == HANDED_PER_SLOT * 2 + 1 + 5
        read.clear()
        assert dispatcher.start_due() == 0  # nothing more while the slow channel's hand is full
        assert read == []  # and the backlog of the full channel is not read at all
        release.set()
        session.drain()
        assert sum(1 for row in session.store.iter_actions(status="sent")) == 305


def test_failed_actions_are_not_read_again_until_one_is_due(tmp_path):
    """A channel that keeps failing leaves failed actions with a later retry time; once a pump has
    read them all and found none due, the next pumps skip them until the earliest retry time, and a
    new failure of the channel makes the next pump read them again."""
    from helpers import FakeTime

    from rulecrm.app.session import Input, Session
    from rulecrm.channels import RETRYABLE
    from rulecrm.events import Event

    class Down:
        def __init__(self, config):
            pass

        def send(self, message):
            return Delivery(RETRYABLE, code="503", detail="down")

        def close(self):
            pass

    rules = write_rules(tmp_path, """
        shop: {timezone: UTC}
        channels:
          out: {type: down}
        rules:
          - id: thanks
            on: order.placed
            notify: {to: customer, channel: out, kind: service, template: thanks}
    """)
    clock = FakeTime(1_000_000.0)
    events = [ev("order.placed", f"c-{n}", "2026-03-01T10:00:00Z", id=f"o-{n}", sku="s") for n in range(20)]
    manager = plugins.build_plugin_manager(load_entry_points=False, extra=[channel_plugin("down", Down)])
    with Session.open(rules, tmp_path / "state.db", manager=manager, deliver=True, clock=clock.clock,
                      dispatch_options={"clock": clock.clock, "sleep": clock.sleep}) as session:
        session.apply([Input("test", n, Event.from_dict(e, default_tz=None)) for n, e in enumerate(events, 1)])
        dispatcher, store = session.dispatcher, session.store
        dispatcher.dispatch()  # every action fails once and waits for its retry
        failed = list(store.iter_actions(status="failed"))
        assert len(failed) == 20
        earliest = min(row["next_attempt"] for row in failed)
        reads = []
        waiting = store.iter_waiting_actions

        def counting(status, channel, **kwargs):
            if channel == "out":  # (the undeclared `console` channel is read too, and has nothing)
                reads.append(status)
            return waiting(status, channel, **kwargs)

        store.iter_waiting_actions = counting
        assert dispatcher.start_due() == 0 and reads == ["queued", "failed"]  # read once, none due
        reads.clear()
        assert dispatcher.start_due() == 0 and reads == ["queued"]  # not read again
        reads.clear()
        clock.now = earliest  # the earliest retry is due: read, and retried
        assert dispatcher.start_due() == 1 and reads == ["queued", "failed"]
        dispatcher.wait_in_flight()  # it fails again: the channel's failed actions are read again
        reads.clear()
        assert dispatcher.start_due() == 0 and reads == ["queued", "failed"]
