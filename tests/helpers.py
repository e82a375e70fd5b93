"""Small helpers for engine tests: write a rules file and events, replay them, return the actions."""
from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

from rulecrm.replay import replay
from rulecrm.timeutil import parse_timestamp
from rulecrm.timeutil import get_zone


def write_rules(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def write_events(tmp_path: Path, events, name: str = "events.jsonl") -> Path:
    path = tmp_path / name
    with path.open("w", encoding="utf-8") as handle:
        for event in events:
            handle.write((event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)) + "\n")
    return path


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
