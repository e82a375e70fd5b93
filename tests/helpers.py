"""Small helpers for engine tests: write a rules file and events, replay them, return the actions."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

from rulecrm.app.replay import replay
from rulecrm.testing import files
from rulecrm.timeutil import get_zone, parse_timestamp


def write_rules(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    return files.write_rules(tmp_path, text, name)


def write_events(tmp_path: Path, events, name: str = "events.jsonl") -> Path:
    return files.write_events(tmp_path / name, events)


def run(tmp_path, rules: str, events, *, until=None, backend="python", state=None, tz="UTC", stages=False):
    """Replay and return (actions as dicts, summary); lifecycle `stage` actions only with stages=True."""
    rules_dir = write_rules(tmp_path, rules)
    events_path = write_events(tmp_path, events)
    out = io.StringIO()
    until_at = parse_timestamp(until, get_zone(tz)) if until else None
    summary = replay(rules_dir, events_path, until=until_at, state=state, out=out, backend_name=backend)
    actions = [json.loads(line) for line in out.getvalue().splitlines()]
    if not stages:
        actions = [a for a in actions if a["kind"] != "stage"]
    return actions, summary


def ev(type_, customer, at, id=None, **data):
    event = {"type": type_, "customer_id": customer, "at": at, "data": data}
    if id is not None:
        event["id"] = id
    return event


def of(actions, **match):
    return [a for a in actions if all(a.get(k) == v for k, v in match.items())]


def rulecrm(*args, cwd=None, timeout=900, **kwargs):
    """`rulecrm ARGS` as a real subprocess (`python -m rulecrm`), its output captured as text."""
    return subprocess.run([sys.executable, "-m", "rulecrm", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, **kwargs)


def wait_for(condition, timeout=60.0, interval=0.02) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False): no fixed sleeps in tests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


class FakeTime:
    """A wall clock in epoch seconds for the dispatcher and rate limits: `sleep` records and moves it."""

    def __init__(self, start=1000.0):
        self.now = start
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
