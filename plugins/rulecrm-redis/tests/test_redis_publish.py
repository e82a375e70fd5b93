"""`rulecrm publish` and `publish()`: each event to the stream of its customer's shard, bad lines not sent."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rulecrm_redis import PublishError, parse_address, publish
from rulecrm_redis.address import AddressError
from shop import PARTITIONS, make_shop, order, shard


def _stream_events(client, stream):
    return [json.loads(fields[b"event"]) for _id, fields in client.xrange(stream)]


def test_each_event_goes_to_its_customers_shard_in_order(tmp_path, redis_url, redis_server):
    _rules, state, _sends = make_shop(tmp_path)
    lines = [order(n) for n in range(120)]
    result = publish(lines, to=redis_url, state=state)
    assert result.sent == 120 and not result.rejected
    client = redis_server.client
    published = {k: _stream_events(client, f"rulecrm:events:{k}") for k in range(PARTITIONS)}
    assert sum(map(len, published.values())) == 120 and dict(result.streams) == {
        f"rulecrm:events:{k}": len(v) for k, v in published.items() if v}
    for k, events in published.items():
        assert {shard(event["customer_id"]) for event in events} <= {k}
        # a stream keeps the file's order
        assert [event["id"] for event in events] == [json.loads(line)["id"] for line in lines
                                                      if shard(json.loads(line)["customer_id"]) == k]
    assert client.get("rulecrm:events:partitions") == str(PARTITIONS).encode()


def test_malformed_lines_are_reported_by_number_and_not_sent(tmp_path, redis_url, redis_server):
    _rules, state, _sends = make_shop(tmp_path)
    lines = [order(0), "{broken", "", order(1), json.dumps({"type": "order.placed", "at": "2026-03-01T10:00:00Z"}),
             b"\xff\xfe", {"type": "order.placed", "customer_id": "c-9", "at": "2026-03-01T10:00:00Z", "id": "d"}]
    result = publish(lines, to=redis_url, state=state)
    assert result.sent == 3
    assert [number for number, _reason in result.rejected] == [2, 5, 6]
    reasons = dict(result.rejected)
    assert "not valid JSON" in reasons[2] and "customer_id" in reasons[5] and "UTF-8" in reasons[6]
    client = redis_server.client
    ids = [event["id"] for k in range(PARTITIONS) for event in _stream_events(client, f"rulecrm:events:{k}")]
    assert sorted(ids) == ["d", "o-0", "o-1"]


def test_a_state_of_another_number_of_partitions_is_refused_before_sending(tmp_path, redis_url, redis_server):
    _rules, state, _sends = make_shop(tmp_path)
    publish([order(0)], to=redis_url, state=state)
    _rules, other, _sends = make_shop(tmp_path / "other", partitions=8)
    with pytest.raises(PublishError, match="made for 4 partitions, the state for 8"):
        publish([order(1)], to=redis_url, state=other)
    assert sum(redis_server.client.xlen(f"rulecrm:events:{k}") for k in range(8)) == 1
    # another prefix is another set of streams
    publish([order(1)], to=redis_url + "?prefix=shop2", state=other)
    assert sum(redis_server.client.xlen(f"shop2:{k}") for k in range(8)) == 1


def test_a_state_file_is_one_partition_and_a_missing_state_is_an_error(tmp_path, redis_url, redis_server):
    state_file = tmp_path / "one.db"
    state_file.write_bytes(b"")
    assert publish([order(0), order(1)], to=redis_url, state=state_file).streams == {"rulecrm:events:0": 2}
    with pytest.raises(PublishError, match="does not exist"):
        publish([order(0)], to=redis_url, state=tmp_path / "nowhere")


def test_partitions_make_a_new_state_as_run_would_and_must_match_an_existing_one(tmp_path, redis_url, redis_server):
    from rulecrm.errors import StateError
    from rulecrm.state.partitioned import PartitionedState

    state = tmp_path / "new-state"
    result = publish([order(n) for n in range(20)], to=redis_url, state=state, partitions=PARTITIONS)
    assert result.sent == 20 and PartitionedState.open(str(state)).partitions == PARTITIONS
    for stream, count in result.streams.items():
        k = int(stream.rsplit(":", 1)[1])
        assert count == sum(1 for n in range(20) if shard(json.loads(order(n))["customer_id"]) == k)
    with pytest.raises(StateError, match="has 4 partitions, not 8"):
        publish([order(0)], to=redis_url, state=state, partitions=8)
    state_file = tmp_path / "one.db"
    state_file.write_bytes(b"")
    with pytest.raises(PublishError, match="leave out --partitions"):
        publish([order(0)], to=redis_url, state=state_file, partitions=2)
    assert sum(redis_server.client.xlen(f"rulecrm:events:{k}") for k in range(PARTITIONS)) == 20


def test_addresses():
    address = parse_address("redis://:secret@10.0.0.5:6380/2?prefix=tea&group=runners&consumer=a&socket_timeout=3")
    assert (address.prefix, address.group, address.consumer) == ("tea", "runners", "a")
    assert address.url == "redis://:secret@10.0.0.5:6380/2?socket_timeout=3" and address.shown == "10.0.0.5:6380/2"
    assert address.stream(3) == "tea:3" and address.partitions_key == "tea:partitions"
    assert parse_address("redis://127.0.0.1").shown == "127.0.0.1:6379/0"
    for bad, says in (("", "expected a Redis URL"), ("http://x", "schemes"), ("redis://h:port/0", "not a number"),
                      ("redis://h/0?prefix=", "prefix= is empty")):
        with pytest.raises(AddressError, match=says):
            parse_address(bad)


def test_unreachable_server_is_one_clear_error(tmp_path):
    _rules, state, _sends = make_shop(tmp_path)
    with pytest.raises(PublishError, match="0 event\\(s\\) were sent"):
        publish([order(0)], to="redis://127.0.0.1:1/0", state=state)


@pytest.mark.slow
def test_the_command(tmp_path, redis_url, redis_server):
    _rules, state, _sends = make_shop(tmp_path)
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join([order(0), "not json", order(1)]) + "\n")
    done = subprocess.run([sys.executable, "-m", "rulecrm", "publish", "--to", redis_url, "--state", str(state),
                           str(events)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert f"{events}:2: rejected (not sent): not valid JSON" in done.stderr
    assert "published 2 event(s)" in done.stderr and "1 line(s) rejected" in done.stderr
    done = subprocess.run([sys.executable, "-m", "rulecrm", "publish", "--to", "redis://127.0.0.1:1/0", "--state",
                           str(state), str(events)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "error:" in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = subprocess.run([sys.executable, "-m", "rulecrm", "publish", "--to", redis_url, "--state",
                           str(tmp_path / "made"), "--partitions", "8", str(events)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "made for 4 partitions, the state for 8" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
