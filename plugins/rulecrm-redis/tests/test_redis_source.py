"""The `redis` source in a runner: each shard's stream through a consumer group, its position in the
shard's own state, acknowledged after the commit, and resumed exactly there."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from rulecrm_redis import publish
from shop import PARTITIONS, make_shop, order, position, query, shard, shard_paths, start_runner

from rulecrm.errors import SourceError


def _ids(paths):
    return Counter(event_id for path in paths for (event_id,) in query(path, "SELECT id FROM events"))


def _last_id(client, stream):
    return client.xinfo_stream(stream)["last-generated-id"].decode()


def test_a_runner_applies_each_shards_stream_in_that_shard_and_keeps_the_position_there(
        tmp_path, redis_url, redis_server):
    rules, state, sends = make_shop(tmp_path)
    publish([order(n) for n in range(150)], to=redis_url, state=state)
    runner = start_runner(rules, state, redis_url, batch_size=40)
    try:
        runner.run(once=True)
        assert runner.stats["applied"] == 150 and runner.stats["duplicates"] == 0
    finally:
        runner.close()
    client = redis_server.client
    for k, path in enumerate(shard_paths(state)):
        customers = {c for (c,) in query(path, "SELECT customer_id FROM events")}
        assert customers and {shard(c) for c in customers} == {k}
        stream = f"rulecrm:events:{k}"
        assert position(path) == {"stream": stream, "last_id": _last_id(client, stream),
                                  "entries": client.xlen(stream)}
        assert client.xpending(stream, "rulecrm")["pending"] == 0  # acknowledged after the commit
    assert len(sends.read_text().splitlines()) == 150


def test_a_restart_resumes_after_the_last_applied_entry(tmp_path, redis_url, redis_server):
    rules, state, _sends = make_shop(tmp_path)
    publish([order(n) for n in range(60)], to=redis_url, state=state)
    runner = start_runner(rules, state, redis_url)
    runner.run(once=True)
    runner.close()
    # id-less events too: numbered by their place in their stream, so a re-read would be recognised,
    # but the position means nothing is read again at all
    publish([order(n, with_id=False) for n in range(60, 100)], to=redis_url, state=state)
    runner = start_runner(rules, state, redis_url)
    try:
        runner.run(once=True)
        assert runner.stats["applied"] == 40 and runner.stats["duplicates"] == 0
    finally:
        runner.close()
    ids = _ids(shard_paths(state))
    assert len(ids) == 100 and set(ids.values()) == {1}


def test_entries_committed_but_not_acknowledged_are_skipped_and_uncommitted_ones_applied(
        tmp_path, redis_url, redis_server):
    """A runner that died between its commit and XACK, with more entries read but not committed: the
    next runner (another consumer) claims them all and applies only those after the stored position."""
    rules, state, _sends = make_shop(tmp_path)
    publish([order(n) for n in range(80)], to=redis_url, state=state)
    dead = start_runner(rules, state, redis_url, batch_size=40)
    dead.sources[0].committed = lambda: None  # dies before acknowledging anything
    dead.step()  # 40 committed
    dead.sources[0].poll(40)  # read (delivered to its consumer) but never committed
    dead.close()
    client = redis_server.client
    assert sum(client.xpending(f"rulecrm:events:{k}", "rulecrm")["pending"] for k in range(PARTITIONS)) > 40
    runner = start_runner(rules, state, redis_url)
    try:
        runner.run(once=True)
        assert runner.stats["applied"] == 40 and runner.stats["duplicates"] == 0
    finally:
        runner.close()
    ids = _ids(shard_paths(state))
    assert len(ids) == 80 and set(ids.values()) == {1}
    for k in range(PARTITIONS):
        stream = f"rulecrm:events:{k}"
        assert client.xpending(stream, "rulecrm")["pending"] == 0
        # the dead runner's consumer, with nothing left pending, was dropped from the group
        assert len(client.xinfo_consumers(stream, "rulecrm")) == 1


def test_runners_of_disjoint_shards_read_only_their_streams(tmp_path, redis_url, redis_server):
    rules, state, _sends = make_shop(tmp_path)
    publish([order(n) for n in range(100)], to=redis_url, state=state)
    low = start_runner(rules, state, redis_url, shards=(0, 1))
    high = start_runner(rules, state, redis_url, shards=(2, 3))
    try:
        low.run(once=True)
        high.run(once=True)
    finally:
        low.close()
        high.close()
    paths = shard_paths(state)
    for k, path in enumerate(paths):
        assert {shard(c) for (c,) in query(path, "SELECT customer_id FROM events")} == {k}
    assert low.stats["applied"] + high.stats["applied"] == 100
    assert low.stats["applied"] == sum(1 for n in range(100) if shard(f"c-{n % 29}") in (0, 1))


def test_bad_entries_become_dead_letters_of_their_shard_with_their_number(tmp_path, redis_url, redis_server):
    rules, state, _sends = make_shop(tmp_path)
    client = redis_server.client
    client.set("rulecrm:events:partitions", PARTITIONS)
    customer = next(f"c-{n}" for n in range(100) if shard(f"c-{n}") == 1)
    elsewhere = next(f"c-{n}" for n in range(100) if shard(f"c-{n}") == 2)
    client.xadd("rulecrm:events:1", {"event": order(1, customer)})
    client.xadd("rulecrm:events:1", {"event": "{broken"})
    client.xadd("rulecrm:events:1", {"payload": "x"})
    client.xadd("rulecrm:events:1", {"event": order(2, elsewhere)})  # a producer that routed it wrongly
    messages = []
    runner = start_runner(rules, state, redis_url, messages=messages)
    try:
        runner.run(once=True)
    finally:
        runner.close()
    path = shard_paths(state)[1]
    letters = query(path, "SELECT source, line_no, error FROM dead_letters ORDER BY line_no")
    origin = "redis:127.0.0.1:{}/0/rulecrm:events:1".format(redis_server.port)
    assert [(source, line) for source, line, _error in letters] == [(origin, 2), (origin, 3), (origin, 4)]
    assert "not valid JSON" in letters[0][2] and "no `event` field" in letters[1][2]
    assert "is in shard 2, but the line came from shard 1's input" in letters[2][2]
    assert query(shard_paths(state)[2], "SELECT count(*) FROM events") == [(0,)]  # never in the other shard
    assert any(f"{origin}:2: rejected" in str(message) for message in messages)
    assert query(path, "SELECT id FROM events") == [("o-1",)]


def test_a_server_routed_for_another_number_of_partitions_is_refused(tmp_path, redis_url, redis_server):
    rules, state, _sends = make_shop(tmp_path)
    redis_server.client.set("rulecrm:events:partitions", 8)
    with pytest.raises(SourceError, match="published for 8 partitions, but the state has 4"):
        start_runner(rules, state, redis_url)


def test_a_state_file_reads_stream_0(tmp_path, redis_url, redis_server):
    rules, _state, sends = make_shop(tmp_path)
    state_file = tmp_path / "one.db"
    start_runner(rules, state_file, redis_url).close()  # creates the state file
    publish([order(n) for n in range(10)], to=redis_url, state=state_file)
    runner = start_runner(rules, state_file, redis_url)
    try:
        runner.run(once=True)
    finally:
        runner.close()
    assert runner.stats["applied"] == 10 and position(state_file)["last_id"] == _last_id(
        redis_server.client, "rulecrm:events:0")
    assert len(sends.read_text().splitlines()) == 10


def test_a_lost_server_is_reported_and_reading_goes_on_when_it_is_back(tmp_path, redis_url, redis_server):
    rules, state, _sends = make_shop(tmp_path)
    publish([order(n) for n in range(10)], to=redis_url, state=state)
    messages = []
    runner = start_runner(rules, state, redis_url, messages=messages)
    try:
        runner.step()
        source = runner.sources[0]
        real = source._client
        source._client = type(real).from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
        assert runner.step() == 0 and any("cannot reach Redis" in str(m) for m in messages)
        source._client = real
        publish([order(n) for n in range(10, 20)], to=redis_url, state=state)
        runner.run(once=True)
        assert any("reading again" in str(m) for m in messages)
        assert runner.stats["applied"] == 20
    finally:
        runner.close()
    assert json.loads(json.dumps(sorted(_ids(shard_paths(state))))) == sorted(f"o-{n}" for n in range(20))


def test_a_redis_restarted_without_its_data_is_read_again_from_the_stored_positions(tmp_path, redis_url, redis_server):
    """The streams and groups are gone (a server restarted without persistence): the groups are made
    again at each shard's stored position, and what is published afterwards is read."""
    rules, state, _sends = make_shop(tmp_path)
    publish([order(n) for n in range(30)], to=redis_url, state=state)
    messages = []
    runner = start_runner(rules, state, redis_url, messages=messages)
    try:
        runner.run(once=True)
        redis_server.client.flushall()
        assert runner.step() == 0 and any("NOGROUP" in str(m) for m in messages)
        publish([order(n) for n in range(30, 60)], to=redis_url, state=state)
        runner.run(once=True)
        assert runner.stats["applied"] == 60 and runner.stats["duplicates"] == 0
    finally:
        runner.close()
    ids = _ids(shard_paths(state))
    assert len(ids) == 60 and set(ids.values()) == {1}
