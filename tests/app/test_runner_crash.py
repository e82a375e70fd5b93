"""`kill -9` at random moments while `rulecrm run` follows a growing file: nothing lost, nothing applied twice.

The runner is a real subprocess with a `jsonl` source and a `jsonl` channel (appends to a file). The
test keeps writing events while it kills the runner several times at seeded random moments and
restarts it on the same state, then checks the state, the outbox, `--out` and the channel's file.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest
from helpers import wait_for, write_rules

from rulecrm.errors import RulecrmError
from rulecrm.state.partitioned import PartitionedState

pytestmark = pytest.mark.slow  # a real runner process, killed and restarted many times

SEED = 20260301
EVENTS = 400
CUSTOMERS = 23
KILLS = 5
CONCURRENCY = 4  # sends of the channel in flight at once: each may repeat after a kill


def _event(n):
    """Order n; one in six has no id, so re-reading it after a kill must give it the same synthetic id."""
    record = {"type": "order.placed", "customer_id": f"c-{n % CUSTOMERS}",
              "at": f"2026-03-01T10:{n // 60:02d}:{n % 60:02d}Z", "data": {"sku": "tea", "amount": 1.5}}
    if n % 6:
        record["id"] = f"o-{n}"
    return json.dumps(record) + "\n"


def _rows(path, sql):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return db.execute(sql).fetchall()


def _state_files(state, partitions):
    """The SQLite files of the state: the file itself, or every shard of a partitioned one."""
    return PartitionedState.open(str(state)).shard_paths() if partitions else [state]


def _count(state, partitions, sql):
    try:
        return sum(_rows(path, sql)[0][0] for path in _state_files(state, partitions))
    except (sqlite3.Error, OSError, RulecrmError):
        return -1  # not written yet


@pytest.mark.parametrize("partitions", [None, 3], ids=["state-file", "partitioned"])
def test_kill_9_at_random_moments_loses_nothing_and_sends_no_key_twice(tmp_path, partitions):
    rng = random.Random(SEED)
    state = tmp_path / ("parts" if partitions else "state.db")
    sends, out, events = (tmp_path / name for name in ("sends.jsonl", "out.jsonl", "events.jsonl"))
    rules = write_rules(tmp_path, f"""
        shop: {{timezone: UTC}}
        channels:
          out: {{type: jsonl, path: "{sends}", concurrency: {CONCURRENCY}}}
        lifecycle: {{dormant_after: 3650d, churned_after: 7300d}}
        rules:
          - id: thanks
            on: order.placed
            notify: {{to: customer, channel: out, kind: service, template: "thanks {{event.id}}"}}
    """)
    events.write_text("")
    command = [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
               "--source", f"jsonl:{events}", "--out", str(out), "--backend", "python"]
    if partitions:
        command += ["--partitions", str(partitions)]
    log = open(tmp_path / "runner.log", "a", buffering=1)

    def start():
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)

    def count(sql):
        return _count(state, partitions, sql)

    def runners_up():
        return (tmp_path / "runner.log").read_text().count("running:")

    written = 0
    kills = 0
    process = start()
    try:
        kill_at = time.monotonic() + rng.uniform(0.8, 2.0)
        while written < EVENTS or kills < KILLS:
            if written < EVENTS:
                chunk = rng.randint(1, 12)
                with events.open("a") as handle:
                    for n in range(written, min(EVENTS, written + chunk)):
                        handle.write(_event(n))
                written = min(EVENTS, written + chunk)
            time.sleep(rng.uniform(0.005, 0.04))
            assert process.poll() is None, "the runner stopped by itself"
            # each kill lands after its runner's start-up (on a busy machine that can outlast kill_at)
            if kills < KILLS and time.monotonic() >= kill_at and runners_up() == kills + 1:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                kills += 1
                process = start()
                kill_at = time.monotonic() + rng.uniform(0.8, 2.0)  # after start-up, mid-stream
        assert wait_for(lambda: count("SELECT count(*) FROM events") == EVENTS
                        and count("SELECT count(*) FROM actions WHERE status IN ('queued', 'failed')") == 0
                        and count("SELECT count(*) FROM actions WHERE rule = 'thanks'") == EVENTS, timeout=120)
        # the last runner is up (its SIGTERM handler installed) before it is asked to stop
        assert wait_for(lambda: runners_up() == kills + 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert kills == KILLS

    files = _state_files(state, partitions)
    # every event applied exactly once, in its customer's shard: ids recorded once, each order counted once
    ids = Counter(event_id for path in files for (event_id,) in _rows(path, "SELECT id FROM events"))
    assert len(ids) == EVENTS and set(ids.values()) == {1}
    if partitions:
        parts = PartitionedState.open(str(state))
        for shard, path in enumerate(files):
            assert {parts.shard_for(c) for (c,) in _rows(path, "SELECT customer_id FROM events")} <= {shard}
    profiles = [json.loads(text) for path in files for (text,) in _rows(path, "SELECT json FROM profiles")]
    orders = Counter()
    for profile in profiles:
        orders[profile["id"]] += profile["order_count"]
    assert orders == Counter(f"c-{n % CUSTOMERS}" for n in range(EVENTS))
    assert sum(p["total_spent"] for p in profiles) == EVENTS * 1.5
    # the outbox: one row per action key, every one delivered; ids as written, synthetic for id-less lines
    rows = dict(row for path in files for row in _rows(path, "SELECT key, status FROM actions WHERE rule = 'thanks'"))
    named = {f"thanks|c-{n % CUSTOMERS}|o-{n}" for n in range(EVENTS) if n % 6}
    assert len(rows) == EVENTS and named <= set(rows) and set(rows.values()) == {"sent"}
    assert sum(_rows(path, "SELECT count(*) FROM dead_letters")[0][0] for path in files) == 0

    # the channel saw every key at least once; a repeat only for a send in flight at a kill (at most
    # CONCURRENCY at once), with its key
    delivered = [json.loads(line) for line in sends.read_text().splitlines()]
    keys = Counter(d["key"] for d in delivered)
    assert set(keys) == set(rows)
    duplicates = sum(n - 1 for n in keys.values())
    # each shard's dispatcher has its own CONCURRENCY slots
    bound = kills * CONCURRENCY * (partitions or 1)
    assert duplicates <= bound, f"{duplicates} channel-side duplicates for {kills} kills"
    assert all(d["text"] == f"thanks {d['key'].rsplit('|', 1)[1]}" for d in delivered)

    # --out is written after each commit: no key is ever reported `sent` twice
    reported = Counter(r["key"] for r in map(json.loads, out.read_text().splitlines()) if r["status"] == "sent")
    assert reported and max(reported.values()) == 1
