"""`rulecrm run` on a partitioned state: each line applied in its customer's shard, the same decisions as
on a state file, one runner per state, crash safety across the shards' commits, the http source's
answers, and channel rate limits shared by the shards. `kill -9` of a runner on a partitioned state is
in test_runner_crash.py, with the same test as for a state file."""
from __future__ import annotations

import io
import json
import random
import sqlite3
import threading
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest
from helpers import FakeTime, rulecrm, write_rules

from rulecrm import plugins
from rulecrm.app.runner import Runner
from rulecrm.channels import DELIVERED, ChannelType, Delivery, Limits
from rulecrm.errors import StateError
from rulecrm.hookspecs import hookimpl
from rulecrm.sources.jsonl import JsonlFollowSource
from rulecrm.state.partitioned import PartitionedState

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc).timestamp()
PARTITIONS = 3


def rules_text(channel):
    """Three kinds of decision: at once, after an hour unless cancelled, and a tag on a profile condition."""
    return f"""
shop: {{timezone: UTC}}
channels:
  out: {channel}
rules:
  - id: thanks
    on: order.placed
    notify: {{to: customer, channel: out, kind: service, template: "thanks {{customer.id}} for {{event.id}}"}}
  - id: again
    on: order.placed
    after: 1h
    unless: order.placed same sku
    notify: {{to: customer, channel: out, kind: service, template: "more {{event.sku}}?"}}
  - id: regular
    when: customer.order_count >= 3
    tag: regular
"""


def sending_to_file(sends):
    return rules_text(f'{{type: jsonl, path: "{sends}"}}')


def order(n, customer, *, at=None, sku=None, with_id=True):
    record = {"type": "order.placed", "customer_id": customer,
              "at": at or f"2026-03-01T10:{n // 60 % 60:02d}:{n % 60:02d}Z",
              "data": {"sku": sku or f"sku-{n % 4}", "amount": 1.5}}
    if with_id:
        record["id"] = f"o-{n}"
    return json.dumps(record) + "\n"


class WallClock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def _manager(*extra):
    manager = plugins.build_plugin_manager(load_entry_points=False)
    for plugin in extra:
        manager.register(plugin)
    return manager


def _runner(rules, state, sources, clock, *, manager=None, **kw):
    messages = []
    runner = Runner(rules, str(state), sources=sources, manager=manager or _manager(), clock=clock,
                    backend_name="python", on_message=messages.append, reload_interval=0, **kw)
    runner.start()
    return runner, messages


def _query(path, sql):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return db.execute(sql).fetchall()


def _shards(directory):
    return PartitionedState.open(str(directory))


def _actions(paths):
    """Every outbox record of the state files, in the order each file wrote them."""
    return [json.loads(text) for path in paths for (text,) in _query(path, "SELECT json FROM actions ORDER BY rowid")]


def test_decides_exactly_what_a_runner_on_a_state_file_decides(tmp_path):
    sends = tmp_path / "sends.jsonl"
    rules = write_rules(tmp_path, sending_to_file(sends))
    rng = random.Random(7)
    events = tmp_path / "events.jsonl"
    # 40 customers; a line in five without an id, and two lines that are not events
    lines = [order(n, f"c-{rng.randrange(40)}", with_id=n % 5 != 0) for n in range(600)]
    lines[100] = "{broken\n"
    lines[200] = json.dumps({"type": "order.placed", "customer_id": "c-3", "at": "not a time"}) + "\n"
    events.write_text("".join(lines))
    PartitionedState.create(tmp_path / "parts", PARTITIONS)

    results = {}
    for state in (tmp_path / "single.db", tmp_path / "parts"):
        clock = WallClock(T0)
        out = io.StringIO()
        runner, _ = _runner(rules, state, [f"jsonl:{events}"], clock, out=out, batch_size=37)
        try:
            runner.run(once=True)
            clock.now = T0 + 3 * 3600  # every follow-up is due
            runner.run(once=True)
        finally:
            runner.close()
        results[state.name] = runner.stats

    single = _actions([tmp_path / "single.db"])
    parts = _shards(tmp_path / "parts")
    sharded = _actions(parts.shard_paths())
    assert len(single) > 600 and any(a["rule"] == "again" for a in single) and any(a["kind"] == "tag" for a in single)
    as_set = {json.dumps(a, sort_keys=True) for a in single}
    assert as_set == {json.dumps(a, sort_keys=True) for a in sharded} and len(sharded) == len(single)
    per_customer = defaultdict(list)
    for action in single:
        per_customer[action["customer_id"]].append(action["key"])
    for action in sharded:
        per_customer[action["customer_id"]].remove(action["key"])  # each key once ...
    assert not any(per_customer.values())
    for customer in {a["customer_id"] for a in single}:  # ... and in the same order per customer
        assert [a["key"] for a in single if a["customer_id"] == customer] == \
               [a["key"] for a in sharded if a["customer_id"] == customer]
    assert results["single.db"] == results["parts"]

    # each customer's events and profile are in its own shard only
    for shard, path in enumerate(parts.shard_paths()):
        customers = {c for (c,) in _query(path, "SELECT customer_id FROM events")}
        customers |= {c for (c,) in _query(path, "SELECT customer_id FROM profiles")}
        assert customers and all(parts.shard_for(c) == shard for c in customers)
    total = sum(_query(path, "SELECT count(*) FROM events")[0][0] for path in parts.shard_paths())
    assert total == _query(tmp_path / "single.db", "SELECT count(*) FROM events")[0][0] == 598
    # the line without a customer is kept by shard 0; the one with a customer by that customer's shard
    kept = {line_no: shard for shard, path in enumerate(parts.shard_paths())
            for (line_no,) in _query(path, "SELECT line_no FROM dead_letters")}
    assert kept == {101: 0, 201: parts.shard_for("c-3")}
    # the sources' positions are in the home shard only
    homes = [path for path in parts.shard_paths() if _query(path, "SELECT key FROM meta WHERE key LIKE 'source:%'")]
    assert homes == [parts.shard_path(0)]


def test_a_second_runner_on_the_same_partitioned_state_is_refused(tmp_path):
    rules = write_rules(tmp_path, sending_to_file(tmp_path / "sends.jsonl"))
    state = tmp_path / "parts"
    PartitionedState.create(state, PARTITIONS)
    runner, _ = _runner(rules, state, [], WallClock(T0))
    try:
        with pytest.raises(StateError, match="in use by another rulecrm process"):
            _runner(rules, state, [], WallClock(T0))
        done = rulecrm("run", "--rules", rules, "--state", state, "--once", timeout=120)
        assert done.returncode == 1 and "in use by another rulecrm process" in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()[-1]) < 300
    finally:
        runner.close()
    # once the first has stopped, the shards are free again
    done = rulecrm("run", "--rules", rules, "--state", state, "--once", timeout=120)
    assert done.returncode == 0, done.stderr


def test_run_makes_a_partitioned_state_and_checks_its_number(tmp_path):
    rules = write_rules(tmp_path, sending_to_file(tmp_path / "sends.jsonl"))
    events = tmp_path / "events.jsonl"
    events.write_text("".join(order(n, f"c-{n}") for n in range(12)))
    state = tmp_path / "parts"
    done = rulecrm("run", "--rules", rules, "--state", state, "--partitions", 4, "--source", f"jsonl:{events}",
                   "--once", timeout=120)
    assert done.returncode == 0 and "applied 12" in done.stderr, done.stderr
    assert _shards(state).partitions == 4
    done = rulecrm("run", "--rules", rules, "--state", state, "--partitions", 3, "--once", timeout=120)
    assert done.returncode == 1 and "has 4 partitions, not 3" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "plain").mkdir()
    done = rulecrm("run", "--rules", rules, "--state", tmp_path / "plain", "--once", timeout=120)
    assert done.returncode == 1 and "not a partitioned state" in done.stderr and "Traceback" not in done.stderr


def test_a_crash_before_the_home_shard_commits_applies_nothing_twice(tmp_path, monkeypatch):
    sends = tmp_path / "sends.jsonl"
    rules = write_rules(tmp_path, sending_to_file(sends))
    events = tmp_path / "events.jsonl"
    # a line in three without an id: read again, it gets the id it had
    events.write_text("".join(order(n, f"c-{n}", with_id=n % 3 != 0) for n in range(30)))
    state = tmp_path / "parts"
    parts = PartitionedState.create(state, PARTITIONS)

    def crash(source, store):  # dies after the other shards committed, before the home shard does
        raise OSError("the process died here")

    monkeypatch.setattr(JsonlFollowSource, "commit", crash)
    runner, _ = _runner(rules, state, [f"jsonl:{events}"], WallClock(T0))
    try:
        with pytest.raises(OSError, match="died here"):
            runner.run(once=True)
    finally:
        runner.close()
    monkeypatch.undo()
    counts = [_query(path, "SELECT count(*) FROM events")[0][0] for path in parts.shard_paths()]
    assert counts[0] == 0 and sum(counts) > 0  # the home shard rolled back, with the positions

    runner, _ = _runner(rules, state, [f"jsonl:{events}"], WallClock(T0))
    try:
        runner.run(once=True)
    finally:
        runner.close()
    assert (runner.stats["applied"], runner.stats["duplicates"]) == (30 - sum(counts), sum(counts))
    ids = [i for path in parts.shard_paths() for (i,) in _query(path, "SELECT id FROM events")]
    assert len(ids) == len(set(ids)) == 30
    delivered = Counter(json.loads(text)["key"] for text in sends.read_text().splitlines())
    assert len(delivered) == 30 and set(delivered.values()) == {1}


def _post(port, body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _customers_in_distinct_shards(parts, count):
    found = {}
    for n in range(1000):
        found.setdefault(parts.shard_for(f"c-{n}"), f"c-{n}")
        if len(found) == count:
            return [found[shard] for shard in sorted(found)]
    raise AssertionError("not enough shards reached")


def test_the_http_source_answers_success_only_for_applied_events(tmp_path):
    rules = write_rules(tmp_path, sending_to_file(tmp_path / "sends.jsonl"))
    state = tmp_path / "parts"
    parts = PartitionedState.create(state, PARTITIONS)
    home_customer, *others = _customers_in_distinct_shards(parts, PARTITIONS)
    runner, _ = _runner(rules, state, ["http:127.0.0.1:0"], WallClock(T0), poll_interval=0.005)
    port = runner.sources[0].server_address[1]
    answers = []

    def client():
        try:
            first = "".join(order(n, customer) for n, customer in enumerate([home_customer, *others], 1))
            answers.append(_post(port, first.encode()))
            again = (order(1, home_customer) + "{broken\n"  # a resend of an applied event, and a bad line
                     + order(2, others[0], sku="another")  # its id reused with other content: not applied
                     + order(9, others[1]))  # new, in the last shard
            answers.append(_post(port, again.encode()))
        finally:
            runner.stop()

    thread = threading.Thread(target=client)
    thread.start()
    try:
        runner.run()
    finally:
        thread.join(30)
        runner.close()
    assert answers[0] == (202, {"accepted": 3, "rejected": 0})
    status, body = answers[1]
    assert status == 400 and (body["accepted"], body["rejected"]) == (2, 2)
    assert [e["line"] for e in body["errors"]] == [2, 3]
    assert "JSON" in body["errors"][0]["error"] and "o-2" in body["errors"][1]["error"]
    applied = {shard: sorted(i for (i,) in _query(path, "SELECT id FROM events"))
               for shard, path in enumerate(parts.shard_paths())}
    assert applied == {0: ["o-1"], parts.shard_for(others[0]): ["o-2"], parts.shard_for(others[1]): ["o-3", "o-9"]}


class LimitedChannel:
    """Records each send with the fake clock's time."""

    sends: list = []

    def __init__(self, config, clock):
        self.clock = clock

    def send(self, message):
        LimitedChannel.sends.append((message.key, self.clock()))
        return Delivery(DELIVERED, code="0")

    def close(self):
        pass


class LimitedPlugin:
    def __init__(self, clock, per_minute):
        self.clock, self.per_minute = clock, per_minute

    @hookimpl
    def rulecrm_channel_types(self):
        return [ChannelType("limited", lambda config: LimitedChannel(config, self.clock),
                            limits=Limits(per_minute=self.per_minute))]


def test_channel_rate_limits_are_shared_by_the_shards(tmp_path):
    per_minute = 2
    rules = write_rules(tmp_path, rules_text("{type: limited}"))
    state = tmp_path / "parts"
    parts = PartitionedState.create(state, PARTITIONS)
    customers = [f"c-{n}" for n in range(12)]
    assert len({parts.shard_for(c) for c in customers}) == PARTITIONS  # every shard has several sends
    events = tmp_path / "events.jsonl"
    events.write_text("".join(order(n, customer) for n, customer in enumerate(customers)))
    fake = FakeTime(T0)
    LimitedChannel.sends = []
    runner, _ = _runner(rules, state, [f"jsonl:{events}"], fake.clock,
                        manager=_manager(LimitedPlugin(fake.clock, per_minute)),
                        dispatch_options={"clock": fake.clock, "sleep": fake.sleep})
    try:
        runner.run(once=True)
    finally:
        runner.close()
    times = sorted(at for _key, at in LimitedChannel.sends if _key.startswith("thanks|"))
    assert len(times) == len(customers)
    # no 60 s window holds more than `per_minute` sends, whichever shard they came from
    assert all(later - earlier >= 60 for earlier, later in zip(times, times[per_minute:], strict=False))
    assert times[-1] - times[0] >= 60 * (len(customers) // per_minute - 1)
