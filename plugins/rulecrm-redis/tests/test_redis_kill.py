"""`kill -9` of a runner reading Redis streams: the runner started for its shards takes over where the
dead one committed. Every event applied once, none read again, every action delivered."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest
from rulecrm_redis import publish
from shop import PARTITIONS, make_shop, order, position, query, shard, shard_paths

EVENTS = 2000
CHUNK = 250  # large enough that a runner is still at work when the kill comes right after a chunk
KILLS = 5


def _wait_for(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_kill_9_of_a_sharded_runner_on_redis_loses_nothing_and_applies_nothing_twice(tmp_path, redis_url,
                                                                                     redis_server, seed):
    rules, state, sends = make_shop(tmp_path)
    logs = {name: tmp_path / f"{name}.log" for name in ("low", "high")}

    def start(name, shards):
        log = open(logs[name], "a", buffering=1)
        process = subprocess.Popen([sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state",
                                    str(state), "--shards", shards, "--source", f"redis:{redis_url}",
                                    "--backend", "python"], stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        return process

    def started(name, times):
        return _wait_for(lambda: logs[name].read_text().count("running:") >= times)

    # a first runner of each half makes the shards' state files and the streams' groups
    publish([], to=redis_url, state=state)
    low, high = start("low", "0-1"), start("high", "2-3")
    rng = random.Random(seed)
    kills = sorted(rng.sample(range(1, EVENTS // CHUNK), KILLS))
    paths = shard_paths(state)
    behind_at_kill = []  # events of shards 0-1 published but not yet committed when a kill came
    try:
        assert started("low", 1) and started("high", 1)
        for chunk in range(EVENTS // CHUNK):
            publish([order(n) for n in range(chunk * CHUNK, (chunk + 1) * CHUNK)], to=redis_url, state=state)
            time.sleep(rng.uniform(0, 0.03))
            if chunk in kills:  # at a random moment of reading, applying, committing or sending
                os.kill(low.pid, signal.SIGKILL)
                published = sum(1 for n in range((chunk + 1) * CHUNK) if shard(f"c-{n % 29}") in (0, 1))
                behind_at_kill.append(published - sum(query(path, "SELECT count(*) FROM events")[0][0]
                                                      for path in paths[:2]))
                low.wait(timeout=30)
                low = start("low", "0-1")
                assert started("low", kills.index(chunk) + 2)

        def count(sql):
            try:
                return sum(query(path, sql)[0][0] for path in paths)
            except sqlite3.Error:
                return -1

        assert _wait_for(lambda: count("SELECT count(*) FROM events") == EVENTS
                         and count("SELECT count(*) FROM actions WHERE status IN ('queued', 'failed')") == 0
                         and count("SELECT count(*) FROM actions WHERE rule = 'thanks'") == EVENTS)
    finally:
        for process in (low, high):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    assert any(behind > 0 for behind in behind_at_kill), behind_at_kill  # some kill came mid-work
    ids = Counter(event_id for path in paths for (event_id,) in query(path, "SELECT id FROM events"))
    assert len(ids) == EVENTS and set(ids.values()) == {1}
    assert count("SELECT count(*) FROM dead_letters") == 0
    # the last runner of shards 0-1 read nothing that the dead ones had committed: no duplicate ids came
    last_stop = re.findall(r"stopped: applied (\d+), duplicates (\d+)", logs["low"].read_text())
    assert len(last_stop) == 1 and last_stop[0][1] == "0", logs["low"].read_text()[-2000:]
    client = redis_server.client
    for k, path in enumerate(paths):
        stream = f"rulecrm:events:{k}"
        assert position(path)["last_id"] == client.xinfo_stream(stream)["last-generated-id"].decode()
        assert client.xpending(stream, "rulecrm")["pending"] == 0
    keys = Counter(json.loads(line)["key"] for line in sends.read_text().splitlines())
    assert len(keys) == EVENTS  # every action reached the channel; a repeat only for a send in flight at a
    # kill: at most the channel's concurrency (16) per shard of the killed runner, per kill
    assert sum(n - 1 for n in keys.values()) <= 16 * 2 * KILLS
    assert PARTITIONS == 4
