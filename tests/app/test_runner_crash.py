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

pytestmark = pytest.mark.slow  # a real runner process, killed and restarted many times

SEED = 20260301
EVENTS = 400
CUSTOMERS = 23
KILLS = 5


def _event(n):
    customer = f"c-{n % CUSTOMERS}"
    return json.dumps({"id": f"o-{n}", "type": "order.placed", "customer_id": customer,
                       "at": f"2026-03-01T10:{n // 60:02d}:{n % 60:02d}Z",
                       "data": {"sku": "tea", "amount": 1.5}}) + "\n"


def _db_count(state, sql):
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return -1



def test_kill_9_at_random_moments_loses_nothing_and_sends_no_key_twice(tmp_path):
    rng = random.Random(SEED)
    sends, out, events, state = (tmp_path / name for name in ("sends.jsonl", "out.jsonl", "events.jsonl", "state.db"))
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
    events.write_text("")
    command = [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
               "--source", f"jsonl:{events}", "--out", str(out), "--backend", "python"]
    log = open(tmp_path / "runner.log", "a", buffering=1)

    def start():
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)

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
            if kills < KILLS and time.monotonic() >= kill_at:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                kills += 1
                process = start()
                kill_at = time.monotonic() + rng.uniform(0.8, 2.0)  # after start-up, mid-stream
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = _db_count(state, "SELECT count(*) FROM events") == EVENTS
            idle = _db_count(state, "SELECT count(*) FROM actions WHERE status IN ('queued', 'failed')") == 0
            if done and idle and _db_count(state, "SELECT count(*) FROM actions WHERE rule = 'thanks'") == EVENTS:
                break
            time.sleep(0.1)
        # the last runner is up (its SIGTERM handler installed) before it is asked to stop
        assert wait_for(lambda: (tmp_path / "runner.log").read_text().count("running:") == kills + 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert kills == KILLS

    expected = {f"thanks|c-{n % CUSTOMERS}|o-{n}" for n in range(EVENTS)}
    with sqlite3.connect(state) as db:
        # every event applied exactly once: ids recorded once and the profiles counted each order once
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (EVENTS, EVENTS)
        counts = {cid: json.loads(text)["order_count"]
                  for cid, text in db.execute("SELECT customer_id, json FROM profiles")}
        assert counts == dict(Counter(f"c-{n % CUSTOMERS}" for n in range(EVENTS)))
        totals = [json.loads(text)["total_spent"] for (text,) in db.execute("SELECT json FROM profiles")]
        assert sum(totals) == EVENTS * 1.5
        # the outbox: one row per action key, every one delivered
        rows = dict(db.execute("SELECT key, status FROM actions WHERE rule = 'thanks'"))
        assert set(rows) == expected and set(rows.values()) == {"sent"}
        assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0

    # the channel saw every key at least once; a repeat only for a send in flight at a kill
    delivered = [json.loads(line) for line in sends.read_text().splitlines()]
    keys = Counter(d["key"] for d in delivered)
    assert set(keys) == expected
    duplicates = sum(n - 1 for n in keys.values())
    assert duplicates <= kills, f"{duplicates} channel-side duplicates for {kills} kills"
    assert all(d["text"] == f"thanks {d['key'].rsplit('|', 1)[1]}" for d in delivered)

    # --out is written after each commit: no key is ever reported `sent` twice
    reported = Counter(r["key"] for r in map(json.loads, out.read_text().splitlines()) if r["status"] == "sent")
    assert reported and max(reported.values()) == 1
