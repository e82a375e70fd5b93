"""Sharded runners: several `rulecrm run`, each owning a disjoint set of shards of one partitioned state.

Each shard is locked by the runner that owns it; a runner for a locked shard is refused, and one
started for the shards of a runner that died takes them over where it stopped. Every runner here
follows its own file of events, holding only its shards' customers (the job a partitioned log does
in production: docs/running.md, "Several runners").
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest
from helpers import wait_for, write_rules
from test_runner_partitioned import T0, WallClock, _runner, order

from rulecrm.app.partitioned_replay import open_partitioned_state
from rulecrm.app.shards import parse_shard_list
from rulecrm.errors import StateError, UsageError
from rulecrm.state.partitioned import PartitionedState, shard_of

PARTITIONS = 4


def test_a_shard_list_is_numbers_and_ranges():
    assert parse_shard_list("0-3") == (0, 1, 2, 3)
    assert parse_shard_list("5") == (5,)
    assert parse_shard_list("8-9, 0,2,2") == (0, 2, 8, 9)
    for bad, says in (("3-1", "runs backwards"), ("a", "such as 0-3"), ("", "such as 0-3"), ("1-", "such as 0-3"),
                      ("-1", "such as 0-3")):
        with pytest.raises(UsageError, match=says):
            parse_shard_list(bad)


def _shop(tmp_path):
    sends = tmp_path / "sends.jsonl"
    rules = write_rules(tmp_path, f"""
        shop: {{timezone: UTC}}
        channels:
          out: {{type: jsonl, path: "{sends}"}}
        lifecycle: {{dormant_after: 3650d, churned_after: 7300d}}
        rules:
          - id: thanks
            on: order.placed
            notify: {{to: customer, channel: out, kind: service, template: "thanks {{event.id}}"}}
    """)
    state = tmp_path / "state"
    open_partitioned_state(str(state), PARTITIONS)
    return rules, state, sends


def _orders_of(shards, count, *, start=0):
    """`count` orders of customers living in `shards`, as JSON lines."""
    lines, n = [], start
    while len(lines) < count:
        customer = f"c-{n % 97}"
        if _shard(customer) in shards:
            lines.append(order(n, customer))
        n += 1
    return lines


def _shard(customer):
    return shard_of(customer, PARTITIONS)  # the state's own hash


def _query(path, sql):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return db.execute(sql).fetchall()


def test_runners_on_disjoint_shards_run_side_by_side_and_an_overlapping_one_is_refused(tmp_path):
    rules, state, _sends = _shop(tmp_path)
    first_file, second_file = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first_file.write_text("".join(_orders_of({0, 1}, 30)))
    second_file.write_text("".join(_orders_of({2, 3}, 30)))
    first, _ = _runner(rules, state, [f"jsonl:{first_file}"], WallClock(T0), shards=(0, 1))
    second, _ = _runner(rules, state, [f"jsonl:{second_file}"], WallClock(T0), shards=(2, 3))
    try:
        with pytest.raises(StateError, match="in use by another rulecrm process"):
            _runner(rules, state, [], WallClock(T0), shards=(1, 2))
        first.run(once=True)
        second.run(once=True)
        assert first.stats["applied"] == 30 and second.stats["applied"] == 30
    finally:
        first.close()
        second.close()
    paths = PartitionedState.open(str(state)).shard_paths()
    for shard, path in enumerate(paths):
        customers = {c for (c,) in _query(path, "SELECT customer_id FROM events")}
        assert customers and {_shard(c) for c in customers} == {shard}  # each event in its customer's shard
        assert _query(path, "SELECT count(*) FROM dead_letters") == [(0,)]
    # the shards the first runner owned can be opened again once it closed
    again, _ = _runner(rules, state, [], WallClock(T0), shards=(1, 2))
    again.close()


def test_shards_the_state_does_not_have_or_a_state_file_are_usage_errors(tmp_path):
    rules, state, _sends = _shop(tmp_path)
    for shards, says in (("7", "there is no shard 7"), ("0-4", "there is no shard 4")):
        done = subprocess.run([sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
                               "--shards", shards, "--once"], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and says in done.stderr and "numbered 0-3" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state",
                           str(tmp_path / "one.db"), "--shards", "0", "--once"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "--shards needs a partitioned state" in done.stderr, done.stderr


@pytest.mark.slow
def test_a_runner_started_for_the_shards_of_one_that_died_takes_them_over(tmp_path):
    """kill -9 of the runner of shards 0-1 while the runner of shards 2-3 goes on; a new runner for 0-1
    resumes where the dead one committed: every event applied once, every action delivered."""
    rules, state, sends = _shop(tmp_path)
    files = {"low": tmp_path / "low.jsonl", "high": tmp_path / "high.jsonl"}
    for path in files.values():
        path.write_text("")
    log = open(tmp_path / "runners.log", "a", buffering=1)

    def start(name, shards):
        return subprocess.Popen([sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
                                 "--shards", shards, "--source", f"jsonl:{files[name]}", "--backend", "python"],
                                stdout=subprocess.DEVNULL, stderr=log)

    low_lines, high_lines = _orders_of({0, 1}, 150), _orders_of({2, 3}, 150)
    low, high = start("low", "0-1"), start("high", "2-3")
    try:
        for chunk in range(0, 150, 10):
            for name, lines in (("low", low_lines), ("high", high_lines)):
                with files[name].open("a") as handle:
                    handle.writelines(lines[chunk:chunk + 10])
            time.sleep(0.03)
            if chunk == 70:  # mid-stream, once the first runner is surely up
                assert wait_for(lambda: (tmp_path / "runners.log").read_text().count("running:") == 2)
                os.kill(low.pid, signal.SIGKILL)
                low.wait(timeout=30)
                low = start("low", "0-1")  # takes over shards 0-1 while the other runner holds 2-3
        paths = PartitionedState.open(str(state)).shard_paths()

        def count(sql):
            try:
                return sum(_query(path, sql)[0][0] for path in paths)
            except sqlite3.Error:
                return -1

        assert wait_for(lambda: count("SELECT count(*) FROM events") == 300
                        and count("SELECT count(*) FROM actions WHERE status IN ('queued', 'failed')") == 0
                        and count("SELECT count(*) FROM actions WHERE rule = 'thanks'") == 300, timeout=120)
    finally:
        for process in (low, high):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        log.close()
    ids = Counter(event_id for path in paths for (event_id,) in _query(path, "SELECT id FROM events"))
    assert len(ids) == 300 and set(ids.values()) == {1}  # nothing lost, nothing applied twice
    assert count("SELECT count(*) FROM dead_letters") == 0
    keys = Counter(json.loads(line)["key"] for line in sends.read_text().splitlines())
    assert len(keys) == 300  # every action reached the channel; a repeat only for a send in flight at the kill:
    # at most the channel's concurrency (16) per shard of the killed runner
    assert sum(n - 1 for n in keys.values()) <= 16 * 2
