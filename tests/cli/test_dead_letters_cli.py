"""`rulecrm dead-letters` and rejected lines end to end, as subprocesses: retry delivers, remove checks,
fixed lines stay fixed, id conflicts are reported, usage errors exit 1."""
from __future__ import annotations

import json
import sqlite3

from helpers import rulecrm

from rulecrm.testing import files

RULES = """
channels:
  outbox: {type: jsonl, path: SENT}
rules:
  - id: thanks
    on: order.placed
    notify: {to: customer, channel: outbox, kind: service, template: "thanks for {event.order_id}"}
"""



def order(n, at="2026-03-01T10:00:00+00:00", **extra):
    event = {"type": "order.placed", "customer_id": f"c-{n}", "at": at, "data": {"order_id": f"o-{n}"}}
    event.update(extra)
    return event


def setup(tmp_path, events):
    rules = files.write_rules(tmp_path, RULES.replace("SENT", str(tmp_path / "sent.jsonl")))
    path = files.write_events(tmp_path / "events.jsonl", events)
    return rules, path, tmp_path / "state.db"


def dead_letters(state):
    listed = rulecrm("dead-letters", "--state", state)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def sent(tmp_path):
    path = tmp_path / "sent.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def fix(tmp_path, corrections):
    path = tmp_path / "fixed.jsonl"
    path.write_text("".join(json.dumps({"id": id_, "raw": raw}) + "\n" for id_, raw in corrections))
    return path


def test_retry_on_a_live_state_queues_and_delivers_like_any_event(tmp_path):
    broken = json.dumps(order(2, id="o-2")).replace('"order.placed"', '"order.placed",')  # not JSON
    rules, events, state = setup(tmp_path, [order(1, id="o-1"), broken])
    run = rulecrm("run", "--rules", rules, "--state", state, "--source", f"jsonl:{events}", "--once")
    assert run.returncode == 0, run.stderr
    assert [m["key"] for m in sent(tmp_path)] == ["thanks|c-1|o-1"]
    [letter] = dead_letters(state)
    fixed = fix(tmp_path, [(letter["id"], json.dumps(order(2, id="o-2")))])
    retry = rulecrm("dead-letters", "--state", state, "--retry", "--from", fixed)
    assert retry.returncode == 0, retry.stderr
    assert [m["text"] for m in sent(tmp_path)] == ["thanks for o-1", "thanks for o-2"]  # delivered
    [record] = [json.loads(line) for line in retry.stdout.splitlines()]
    assert (record["key"], record["status"]) == ("thanks|c-2|o-2", "sent")
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT status FROM actions WHERE key = 'thanks|c-2|o-2'").fetchone() == ("sent",)
    assert dead_letters(state) == []


def test_retry_on_a_replayed_history_records_without_delivering(tmp_path):
    rules, events, state = setup(tmp_path, [order(1, id="o-1"), "{oops"])
    assert rulecrm("replay", "--rules", rules, "--events", events, "--state", state).returncode == 3
    [letter] = dead_letters(state)
    retry = rulecrm("dead-letters", "--state", state, "--retry", "--from",
                    fix(tmp_path, [(letter["id"], json.dumps(order(2)))]))
    assert retry.returncode == 0, retry.stderr
    assert "not delivered" in retry.stderr and sent(tmp_path) == []


def test_a_fixed_line_without_id_is_applied_once_however_often_retried(tmp_path):
    rules, events, state = setup(tmp_path, [order(1), '{"type": "order.placed"}'])
    rulecrm("replay", "--rules", rules, "--events", events, "--state", state)
    [letter] = dead_letters(state)
    fixed = fix(tmp_path, [(letter["id"], json.dumps(order(2)))])  # no id
    first = rulecrm("dead-letters", "--state", state, "--retry", "--from", fixed)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr and "re-ingested 1" in first.stderr
    again = rulecrm("dead-letters", "--state", state, "--retry", "--from", fixed)
    assert again.returncode == 1 and "do not exist" in again.stderr  # already re-ingested: nothing to fix
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM events WHERE customer_id = 'c-2'").fetchone() == (1,)


def test_remove_of_an_unknown_id_fails_and_removes_nothing(tmp_path):
    rules, events, state = setup(tmp_path, ["{oops", "[1]"])
    rulecrm("replay", "--rules", rules, "--events", events, "--state", state)
    first, second = dead_letters(state)
    removed = rulecrm("dead-letters", "--state", state, "--remove", first["id"], "--remove", 999)
    assert removed.returncode == 1
    assert "999" in removed.stderr and "nothing removed" in removed.stderr
    assert [d["id"] for d in dead_letters(state)] == [first["id"], second["id"]]
    ok = rulecrm("dead-letters", "--state", state, "--remove", first["id"])
    assert ok.returncode == 0 and [d["id"] for d in dead_letters(state)] == [second["id"]]


def test_replaying_the_same_file_does_not_bring_back_fixed_or_removed_lines(tmp_path):
    rules, events, state = setup(tmp_path, [order(1, id="o-1"), "{oops", "[2]"])
    rulecrm("replay", "--rules", rules, "--events", events, "--state", state)
    oops, array = dead_letters(state)
    rulecrm("dead-letters", "--state", state, "--retry", "--from",
            fix(tmp_path, [(oops["id"], json.dumps(order(2, id="o-2")))]))
    rulecrm("dead-letters", "--state", state, "--remove", array["id"])
    again = rulecrm("replay", "--rules", rules, "--events", events, "--state", state)
    assert again.returncode == 0, again.stderr
    assert "fixed before 2" in again.stderr
    assert dead_letters(state) == []


def test_without_state_the_summary_does_not_point_at_a_thrown_away_store(tmp_path):
    rules, events, _state = setup(tmp_path, [order(1), "{oops"])
    done = rulecrm("replay", "--rules", rules, "--events", events)
    assert done.returncode == 3
    assert "--state DB" not in done.stderr and "dead-letters --state" not in done.stderr
    assert "replay with --state STATE to keep them" in done.stderr
    with_state = rulecrm("replay", "--rules", rules, "--events", events, "--state", _state)
    assert f"rulecrm dead-letters --state {_state}" in with_state.stderr


def test_an_id_reused_with_other_content_is_a_conflict_with_its_line(tmp_path):
    rules, events, state = setup(tmp_path, [
        order(1, id="o-1"), order(1, id="o-1"), order(2, id="o-1"),  # resent (duplicate), then reused
        order(1, id="o-1", at="2026-03-01T18:00:00+08:00"),  # the same instant written in another zone
    ])
    for extra in (["--state", state], []):
        done = rulecrm("replay", "--rules", rules, "--events", events, *extra)
        assert done.returncode == 3
        [rejected] = [line for line in done.stderr.splitlines() if "rejected" in line and "o-1" in line]
        assert rejected.startswith(f"{events}:3: rejected: id 'o-1' was already used by a different event")
        assert "applied 1, duplicates 2, rejected 1" in done.stderr
    [letter] = dead_letters(state)
    assert letter["line_no"] == 3 and json.loads(letter["raw"])["customer_id"] == "c-2"


def test_usage_errors_exit_1(tmp_path):
    rules, events, _state = setup(tmp_path, [order(1)])
    for args in (["replay", "--rules", rules, "--events", events, "--until", "someday"],
                 ["replay", "--rules", tmp_path / "missing", "--events", events],
                 ["replay", "--rules", rules, "--events", tmp_path / "missing.jsonl"],
                 ["replay", "--rules", rules],
                 ["check", tmp_path / "missing"],
                 ["dead-letters", "--state", tmp_path / "missing.db"],
                 ["no-such-command"]):
        done = rulecrm(*args)
        assert done.returncode == 1, (args, done.returncode, done.stderr)
        assert "Error:" in done.stderr and "Traceback" not in done.stderr
    assert rulecrm("--help").returncode == 0 and rulecrm("replay", "--help").returncode == 0
