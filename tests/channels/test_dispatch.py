"""Delivery from the outbox: queued -> sent | failed (backoff) | dead, observers, limits, `replay --dispatch`."""
from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import FakeTime, ev, write_events, write_rules

from rulecrm import plugins
from rulecrm.app.replay import replay
from rulecrm.channels import (
    DELIVERED,
    PERMANENT,
    RETRYABLE,
    ChannelConfig,
    ChannelConfigError,
    ChannelType,
    Delivery,
    Limits,
    Message,
    Setting,
)
from rulecrm.channels.builtin import MemoryChannel
from rulecrm.channels.dispatch import Dispatcher, backoff
from rulecrm.cli import main
from rulecrm.hookspecs import hookimpl
from rulecrm.state.store import Store


class FlakyChannel:
    """Fails the first `fail_first` sends of each key (RETRYABLE), always fails `permanent_for`."""

    calls: list = []

    def __init__(self, config):
        self.config = config
        self.fail_first = int(config.get("fail_first", 0))
        self.permanent_for = config.get("permanent_for")
        self.retry_after = config.get("retry_after")
        if config.get("token_env"):
            config.secret("token")

    def send(self, message):
        FlakyChannel.calls.append(message)
        if message.address == self.permanent_for:
            return Delivery(PERMANENT, code="40003", detail="invalid user")
        tries = sum(1 for m in FlakyChannel.calls if m.key == message.key)
        if tries <= self.fail_first:
            return Delivery(RETRYABLE, code="503", detail="busy", retry_after=self.retry_after)
        return Delivery(DELIVERED, code="0")

    def close(self):
        pass


class PacedChannel(FlakyChannel):
    """Paces itself with its own `per_minute` setting (like a webhook to a slow gateway)."""

    def __init__(self, config):
        super().__init__(config)
        self.limits = Limits(per_minute=config.positive("per_minute", None, int))


class FlakyPlugin:
    @hookimpl
    def rulecrm_channel_types(self):
        settings = tuple(Setting(n) for n in ("fail_first", "permanent_for", "retry_after", "per_minute")) + (
            Setting("token", secret=True), Setting("key", secret=True),
        )
        return [
            ChannelType("flaky", FlakyChannel, settings=settings),
            ChannelType("limited", FlakyChannel, settings=settings, limits=Limits(per_minute=2, rate_key="key")),
            ChannelType("paced", PacedChannel, settings=settings),
        ]


class Observer:
    def __init__(self, time=None):
        self.seen = []
        self.times = {}
        self.time = time

    @hookimpl
    def rulecrm_action_dispatched(self, action, delivery):
        self.seen.append((action["key"], action["status"], delivery.status))
        if self.time is not None:
            self.times.setdefault(action["key"], []).append(self.time.now)


class BrokenObserver:
    @hookimpl
    def rulecrm_action_dispatched(self, action):
        raise RuntimeError("observer bug")


class MemoryKeeper:
    """Provides `kept-memory`: the built-in memory channel, each instance kept so the test can read it."""

    def __init__(self):
        self.channels = {}

    @hookimpl
    def rulecrm_channel_types(self):
        return [ChannelType("kept-memory", self._build, supports_tags=True)]

    def _build(self, config):
        self.channels[config.name] = channel = MemoryChannel(config)
        return channel


@pytest.fixture(autouse=True)
def _reset_channels():
    FlakyChannel.calls = []
    yield


RULES = """
shop: {timezone: UTC}
channels:
  flaky: {type: flaky, fail_first: %(fail_first)s, permanent_for: c-bad%(extra)s}
rules:
  - id: thanks
    on: order.placed
    notify: {to: customer, channel: flaky, kind: service, template: "thanks {customer.id}"}
"""

EVENTS = [
    ev("order.placed", "c-1", "2026-03-01T10:00:00Z", id="o-1", sku="tea", amount=10),
    ev("order.placed", "c-bad", "2026-03-01T11:00:00Z", id="o-2", sku="tea", amount=10),
    ev("order.placed", "c-2", "2026-03-01T12:00:00Z", id="o-3", sku="tea", amount=10),
]


def _manager(*extra):
    return plugins.build_plugin_manager(load_entry_points=False, extra=[FlakyPlugin(), *extra])


def _replay(tmp_path, *, fail_first=0, extra="", manager=None, time=None, state=None, dispatch=True, **options):
    rules = write_rules(tmp_path, RULES % {"fail_first": fail_first, "extra": extra})
    events = write_events(tmp_path, EVENTS)
    time = time or FakeTime(1_000_000.0)
    out = io.StringIO()
    summary = replay(
        rules, events, state=state, out=out, backend_name="python", plugin_manager=manager or _manager(),
        dispatch=dispatch, dispatch_options={"clock": time.clock, "sleep": time.sleep, "seed": 7, **options},
    )
    return [json.loads(line) for line in out.getvalue().splitlines()], summary, time


def _by_key(actions):
    return {a["key"]: a for a in actions if a["kind"] == "notify"}


def test_retryable_failures_are_retried_with_the_seeded_backoff_then_sent(tmp_path):
    time = FakeTime(1_000_000.0)
    observer = Observer(time)
    actions, summary, _time = _replay(tmp_path, fail_first=2, time=time, manager=_manager(observer))
    good = _by_key(actions)["thanks|c-1|o-1"]
    assert good["status"] == "sent" and good["attempts"] == 3 and good["error"] is None
    assert good["delivered_at"] is not None and good["sent_at"] == "2026-03-01T10:00:00+00:00"
    sends = [m.key for m in FlakyChannel.calls]
    assert sends.count("thanks|c-1|o-1") == 3 and sends.count("thanks|c-2|o-3") == 3
    # each retry happened exactly when the seeded backoff for that key and attempt said
    for key in ("thanks|c-1|o-1", "thanks|c-2|o-3"):
        first, second, third = observer.times[key]
        assert second - first == pytest.approx(backoff(key, 1, seed=7))
        assert third - second == pytest.approx(backoff(key, 2, seed=7))
    assert summary.undelivered == 1  # the permanent one


def test_backoff_is_exponential_jittered_and_reproducible():
    delays = [backoff("k", n, seed=1, base=2.0) for n in range(1, 6)]
    assert delays == [backoff("k", n, seed=1, base=2.0) for n in range(1, 6)]
    for n, delay in enumerate(delays, 1):
        raw = 2.0 * 2 ** (n - 1)
        assert raw / 2 <= delay <= raw
    assert backoff("k", 1, seed=1) != backoff("k", 1, seed=2)
    assert backoff("k", 1, seed=1, retry_after=90) == 90
    assert backoff("k", 30, seed=1, cap=600) <= 600


def test_a_permanent_error_is_dead_at_once_with_its_code(tmp_path):
    actions, _summary, _time = _replay(tmp_path)
    bad = _by_key(actions)["thanks|c-bad|o-2"]
    assert bad["status"] == "dead" and bad["attempts"] == 1
    assert bad["code"] == "40003" and bad["error"] == "invalid user"


def test_giving_up_after_the_bounded_number_of_attempts(tmp_path):
    actions, summary, time = _replay(tmp_path, fail_first=99, max_attempts=4)
    good = _by_key(actions)["thanks|c-1|o-1"]
    assert good["status"] == "dead" and good["attempts"] == 4
    assert good["error"].startswith("gave up after 4 attempts") and good["code"] == "503"
    assert summary.actions["dead"] == 3


def test_retry_after_from_the_provider_is_honoured(tmp_path):
    _actions, _summary, time = _replay(tmp_path, fail_first=1, extra=", retry_after: 120")
    assert time.sleeps and min(time.sleeps) >= 60  # two keys due 120 s after their first attempt


def test_failed_actions_left_at_the_deadline_stay_failed_for_a_later_run(tmp_path):
    rules = write_rules(tmp_path, RULES % {"fail_first": 1, "extra": ""})
    events = write_events(tmp_path, EVENTS)
    state = str(tmp_path / "state.db")
    time = FakeTime(1_000_000.0)
    manager = _manager()
    store = Store.open(state)
    ruleset = plugins.load_rules_with(manager, rules)
    dispatcher = Dispatcher(ruleset, manager, store, clock=time.clock, sleep=time.sleep)
    from rulecrm.app.session import build_engine
    from rulecrm.sources.reader import read_events

    engine = build_engine(ruleset, store, backend_name="python", dispatcher=dispatcher)
    with store.transaction():
        for _line, event in read_events(events, default_tz=ruleset.shop.timezone):
            engine.ingest(event)
        engine.flush()
    assert {row["status"] for row in store.iter_actions() if row["kind"] == "notify"} == {"queued"}
    dispatcher.drain(deadline=time.now)  # retries are due later than the deadline
    statuses = {row["key"]: row["status"] for row in store.iter_actions() if row["kind"] == "notify"}
    assert statuses == {"thanks|c-1|o-1": "failed", "thanks|c-bad|o-2": "dead", "thanks|c-2|o-3": "failed"}
    failed = store.get_action("thanks|c-1|o-1")
    assert failed["attempts"] == 1 and failed["error"] == "busy" and failed["next_attempt_at"]
    dispatcher.drain()
    assert store.get_action("thanks|c-1|o-1")["status"] == "sent"
    # a key already sent is never handed to a channel again
    before = len(FlakyChannel.calls)
    assert dispatcher.deliver("thanks|c-1|o-1") is False
    assert len(FlakyChannel.calls) == before
    dispatcher.close()
    engine.close()
    store.close()


def test_without_dispatch_nothing_is_called_and_statuses_are_unchanged(tmp_path):
    actions, summary, _time = _replay(tmp_path, fail_first=5, dispatch=False)
    assert FlakyChannel.calls == []
    assert {a["status"] for a in actions if a["kind"] == "notify"} == {"sent"}
    assert "attempts" not in actions[0] and summary.undelivered == 0


def test_a_second_dispatching_replay_on_the_same_state_sends_nothing(tmp_path):
    state = str(tmp_path / "state.db")
    _replay(tmp_path, state=state)
    calls = len(FlakyChannel.calls)
    actions, _summary, _time = _replay(tmp_path, state=state)
    assert actions == [] and len(FlakyChannel.calls) == calls


def test_observers_see_every_attempt_and_a_failing_one_is_named_not_fatal(tmp_path):
    observer = Observer()
    warnings = []
    _replay(tmp_path, fail_first=1, manager=_manager(BrokenObserver(), observer), on_warning=warnings.append)
    assert ("thanks|c-1|o-1", "failed", RETRYABLE) in observer.seen
    assert ("thanks|c-1|o-1", "sent", DELIVERED) in observer.seen
    assert len(observer.seen) == 5  # 2 + 1 (permanent) + 2
    assert len(warnings) == 5  # reported at every attempt, never swallowed
    assert "BrokenObserver" in warnings[0] and "failed in rulecrm_action_dispatched" in warnings[0]
    assert "observer bug" in warnings[0]


def test_an_unknown_channel_type_makes_the_action_dead_with_a_clear_error(tmp_path):
    rules = write_rules(tmp_path, """
        shop: {timezone: UTC}
        channels:
          sms: {type: carrier-pigeon}
        rules:
          - id: hi
            on: order.placed
            notify: {to: customer, channel: sms, kind: service, template: hi}
    """)
    events = write_events(tmp_path, EVENTS[:1])
    out = io.StringIO()
    summary = replay(rules, events, out=out, backend_name="python", plugin_manager=_manager(), dispatch=True)
    (action,) = [json.loads(line) for line in out.getvalue().splitlines() if '"notify"' in line]
    assert (action["status"] == "dead" and "carrier-pigeon" in action["error"]
            and "no installed plugin" in action["error"])
    assert summary.undelivered == 1


def test_a_missing_environment_variable_is_an_error_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("FLAKY_TOKEN_FOR_TEST", raising=False)
    state = str(tmp_path / "state.db")
    with pytest.raises(ChannelConfigError, match="FLAKY_TOKEN_FOR_TEST is not set"):
        _replay(tmp_path, extra=", token_env: FLAKY_TOKEN_FOR_TEST", state=state)
    with Store.open(state) as store:
        assert store.count_events() == 0
    assert FlakyChannel.calls == []


def test_rate_limits_are_shared_by_channels_with_the_same_rate_key(tmp_path):
    rules = write_rules(tmp_path, """
        shop: {timezone: UTC}
        channels:
          a: {type: limited, key_env: ROBOT_1_KEY}
          b: {type: limited, key_env: ROBOT_1_KEY}
        rules:
          - id: to-a
            on: order.placed
            notify: {to: customer, channel: a, kind: service, template: a}
          - id: to-b
            on: order.placed
            notify: {to: customer, channel: b, kind: service, template: b}
    """)
    events = write_events(tmp_path, EVENTS[:1] + EVENTS[2:])
    time = FakeTime(1_000_000.0)
    replay(rules, events, backend_name="python", plugin_manager=_manager(), dispatch=True,
           dispatch_options={"clock": time.clock, "sleep": time.sleep})
    assert len(FlakyChannel.calls) == 4
    assert time.sleeps == [60.0]  # per_minute 2 for the robot key both use: the third send waits for the first token


def test_a_channel_instance_with_its_own_limits_is_paced_by_them(tmp_path):
    rules = write_rules(tmp_path, """
        shop: {timezone: UTC}
        channels:
          gateway: {type: paced, per_minute: 1}
        rules:
          - id: hello
            on: order.placed
            notify: {to: customer, channel: gateway, kind: service, template: hi}
    """)
    events = write_events(tmp_path, EVENTS[:1] + EVENTS[2:])
    time = FakeTime(1_000_000.0)
    replay(rules, events, backend_name="python", plugin_manager=_manager(), dispatch=True,
           dispatch_options={"clock": time.clock, "sleep": time.sleep})
    assert len(FlakyChannel.calls) == 2
    assert time.sleeps == [60.0]  # the type declares no limit; the instance's per_minute: 1 applies


def test_tag_actions_go_to_the_preferred_channel_when_it_syncs_tags(tmp_path):
    rules = write_rules(tmp_path, """
        shop: {timezone: UTC}
        channels:
          mem: {type: kept-memory}
        rules:
          - id: buyer
            when: customer.order_count >= 1
            tag: buyer
    """)
    events = write_events(tmp_path, [
        ev("customer.upserted", "c-1", "2026-03-01T09:00:00Z", id="u-1", channel="mem"),
        ev("order.placed", "c-1", "2026-03-01T10:00:00Z", id="o-1", sku="tea", amount=1),
        ev("order.placed", "c-2", "2026-03-01T10:00:00Z", id="o-2", sku="tea", amount=1),
    ])
    out = io.StringIO()
    keeper = MemoryKeeper()
    replay(rules, events, out=out, backend_name="python", plugin_manager=_manager(keeper), dispatch=True)
    tags = {a["customer_id"]: a for a in map(json.loads, out.getvalue().splitlines()) if a["kind"] == "tag"}
    assert tags["c-1"]["channel"] == "mem" and tags["c-1"]["status"] == "sent" and tags["c-1"]["attempts"] == 1
    assert tags["c-2"]["channel"] is None and tags["c-2"]["status"] == "sent" and "attempts" not in tags["c-2"]
    assert keeper.channels["mem"].sent == [("tags", "c-1", ("buyer",), ())]


def test_memory_channels_keep_their_own_messages():
    first, second = (MemoryChannel(ChannelConfig(name, "memory", {})) for name in ("a", "b"))
    message = Message(key="k", channel="a", address="c-1", text="hi", kind="service", customer_id="c-1", rule="r")
    first.send(message)
    assert (first.sent, second.sent) == ([message], [])
    assert MemoryChannel(ChannelConfig("a", "memory", {})).sent == []  # a new instance of the same name starts empty


def test_cli_replay_dispatch_exits_4_when_an_action_ends_dead(tmp_path, monkeypatch):
    rules = write_rules(tmp_path, RULES % {"fail_first": 0, "extra": ""})
    events = write_events(tmp_path, EVENTS)
    manager = _manager()
    monkeypatch.setattr(plugins, "build_plugin_manager", lambda **kw: manager)
    result = CliRunner().invoke(
        main, ["replay", "--rules", str(rules), "--events", str(events), "--dispatch", "--out", "-"]
    )
    assert result.exit_code == 4, result.stderr
    assert "1 action(s) not delivered" in result.stderr
    plain = CliRunner().invoke(main, ["replay", "--rules", str(rules), "--events", str(events)])
    assert plain.exit_code == 0


def test_cli_replay_dispatch_delivers_through_the_jsonl_channel(tmp_path):
    sends = tmp_path / "sends.jsonl"
    rules = write_rules(tmp_path, f"""
        shop: {{timezone: UTC}}
        channels:
          out: {{type: jsonl, path: "{sends}"}}
        rules:
          - id: thanks
            on: order.placed
            notify: {{to: customer, channel: out, kind: service, template: "thanks {{customer.id}}"}}
    """)
    events = write_events(tmp_path, EVENTS)
    state = tmp_path / "state.db"
    command = [sys.executable, "-m", "rulecrm", "replay", "--rules", str(rules), "--events", str(events),
               "--state", str(state), "--dispatch"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in sends.read_text().splitlines()]
    # three customers' sends run concurrently: the channel may get them in any order
    assert sorted(line["key"] for line in lines) == ["thanks|c-1|o-1", "thanks|c-2|o-3", "thanks|c-bad|o-2"]
    with sqlite3.connect(state) as db:
        assert set(s for (s,) in db.execute("SELECT status FROM actions WHERE rule = 'thanks'")) == {"sent"}
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and len(sends.read_text().splitlines()) == 3


def test_the_jsonl_channel_writes_each_message_whole_and_at_once(tmp_path):
    """The file stays open between sends, so each line must be flushed as it is written: a reader
    tailing the file sees every message before the channel closes. Closing lets go of the file."""
    from rulecrm.channels.builtin import JsonlChannel

    path = tmp_path / "sends.jsonl"
    channel = JsonlChannel(ChannelConfig(name="out", type="jsonl", settings={"path": str(path)}))
    for n in range(3):
        message = Message(key=f"k-{n}", channel="out", address="a", customer_id="c-1", rule="r", kind="service",
                          subject=None, text=f"hello {n}")
        assert channel.send(message).status == DELIVERED
        lines = path.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["text"] for line in lines] == [f"hello {i}" for i in range(n + 1)]
    channel.close()
    path.unlink()  # closed: a later send opens the file again
    channel.send(message)
    assert json.loads(path.read_text(encoding="utf-8"))["key"] == "k-2"
    channel.close()
