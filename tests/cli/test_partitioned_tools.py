"""`rulecrm explain` and `rulecrm dead-letters` on a partitioned state, as real processes: explain reads
the customer's shard, dead letters keep their line numbers and are named SHARD:ID, a fixed line is
applied in its customer's shard (once, however often retried, even when a retry is cut short)."""
from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from helpers import rulecrm

from rulecrm.app import shard_deadletters as deadletters
from rulecrm.state.partitioned import PartitionedState, shard_of
from rulecrm.state.store import Store
from rulecrm.testing import files

PARTITIONS = 3
RULES = """
rules:
  - id: repeat-buyer
    when: customer.order_count >= 2
    tag: repeat-buyer
  - id: thanks
    on: order.placed
    notify: {to: customer, kind: service, template: "thanks for {event.order_id}"}
  - id: come-back
    on: order.placed
    after: 30d
    unless: order.placed
    notify: {to: customer, kind: marketing, template: "we miss you"}
"""
CUSTOMERS = [f"c-{n}" for n in range(1, 13)]
NOT_JSON = "{not json"
NO_CUSTOMER = json.dumps({"type": "order.placed", "at": "2026-03-02T10:00:00+00:00", "data": {"order_id": "o-x"}})
BAD_TIME = json.dumps({"type": "order.placed", "customer_id": "c-5", "at": "yesterday", "data": {"order_id": "o-y"}})


def order(customer, day, **extra):
    return {"type": "order.placed", "customer_id": customer, "at": f"2026-03-{day:02d}T10:00:00+00:00",
            "data": {"order_id": f"o-{customer}-{day}"}, **extra}


def event_lines() -> list:
    """Orders of twelve customers over eight days (half of them with ids), three malformed lines among them."""
    lines = [order(customer, day, **({"id": f"e-{customer}-{day}"} if day % 2 else {}))
             for day in range(1, 9) for n, customer in enumerate(CUSTOMERS, 1) if (n + day) % 3 == 0]
    lines[5:5] = [NOT_JSON]
    lines[11:11] = [NO_CUSTOMER]
    lines[17:17] = [BAD_TIME]
    return lines


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """The same input replayed on a partitioned state and on a state file: (rules, events, dir, file)."""
    tmp_path = tmp_path_factory.mktemp("replayed")
    rules = files.write_rules(tmp_path, RULES)
    events = files.write_events(tmp_path / "events.jsonl", event_lines())
    partitioned, single = tmp_path / "partitioned", tmp_path / "single.db"
    for state, extra in ((partitioned, ["--partitions", PARTITIONS]), (single, [])):
        done = rulecrm("replay", "--rules", rules, "--events", events, "--state", state, "--backend", "python",
                       "--out", tmp_path / "actions.jsonl", *extra)
        assert done.returncode == 3, done.stderr  # the malformed lines
    return rules, events, partitioned, single


@pytest.fixture
def state(replayed, tmp_path):
    """A copy of the partitioned state, for a test that writes to it."""
    return shutil.copytree(replayed[2], tmp_path / "partitioned")


def line_no(text: str) -> int:
    return [json.dumps(line) if isinstance(line, dict) else line for line in event_lines()].index(text) + 1


def listing(state) -> list[dict]:
    done = rulecrm("dead-letters", "--state", state)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def fix(tmp_path, corrections: dict) -> str:
    path = tmp_path / "fixed.jsonl"
    path.write_text("".join(json.dumps({"id": id_, "raw": raw}) + "\n" for id_, raw in corrections.items()))
    return path


def events_of(state, customer: str) -> dict[int, list[str]]:
    """The ids of the customer's events in each shard that has any."""
    found = {}
    for shard, path in enumerate(PartitionedState.open(state).shard_paths()):
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT id FROM events WHERE customer_id = ?", (customer,)).fetchall()
        if rows:
            found[shard] = [row[0] for row in rows]
    return found


def one_line_error(done, text: str) -> None:
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: ") and text in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# -- explain -----------------------------------------------------------------------------


def test_explain_reads_the_customers_shard_and_says_the_same_as_on_a_state_file(replayed):
    rules, _events, partitioned, single = replayed
    one_per_shard = {shard_of(customer, PARTITIONS): customer for customer in reversed(CUSTOMERS)}
    assert len(one_per_shard) == PARTITIONS
    for shard, customer in sorted(one_per_shard.items()):
        on_shard = rulecrm("explain", "--rules", rules, "--state", partitioned, "--customer", customer)
        on_file = rulecrm("explain", "--rules", rules, "--state", single, "--customer", customer)
        assert on_shard.returncode == 0 and on_file.returncode == 0, on_shard.stderr + on_file.stderr
        first, rest = on_shard.stdout.split("\n", 1)
        assert first == f"state {partitioned}, shard {shard} of {PARTITIONS} (shard-{shard:04d}.db)"
        assert rest == on_file.stdout


def test_explain_json_names_the_shard(replayed):
    rules, _events, partitioned, single = replayed
    done = rulecrm("explain", "--rules", rules, "--state", partitioned, "--customer", "c-5", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    shard = shard_of("c-5", PARTITIONS)
    assert report.pop("state") == {"path": str(partitioned), "shard": shard, "partitions": PARTITIONS,
                                   "file": PartitionedState.open(partitioned).shard_path(shard)}
    on_file = rulecrm("explain", "--rules", rules, "--state", single, "--customer", "c-5", "--json")
    assert report == json.loads(on_file.stdout)


def test_a_directory_that_is_not_a_partitioned_state_is_refused(replayed, tmp_path):
    rules = replayed[0]
    plain = tmp_path / "plain"
    plain.mkdir()
    for args in (["explain", "--rules", rules, "--state", plain, "--customer", "c-1"],
                 ["dead-letters", "--state", plain]):
        one_line_error(rulecrm(*args), f"{plain} is not a partitioned state (no manifest.json in it)")


# -- dead letters ------------------------------------------------------------------------


def test_dead_letters_of_every_shard_are_listed_with_their_lines_in_the_input(replayed):
    _rules, events, partitioned, single = replayed
    listed = listing(partitioned)
    assert [(d["line_no"], d["raw"]) for d in listed] == [
        (line_no(NOT_JSON), NOT_JSON), (line_no(NO_CUSTOMER), NO_CUSTOMER), (line_no(BAD_TIME), BAD_TIME)]
    assert [d["shard"] for d in listed] == [0, 0, shard_of("c-5", PARTITIONS)]
    assert all(d["id"].startswith(f"{d['shard']}:") and d["source"] == str(events) for d in listed)
    on_file = listing(single)
    assert [(d["line_no"], d["raw"], d["error"]) for d in listed] == [
        (d["line_no"], d["raw"], d["error"]) for d in on_file]


def test_a_fixed_line_is_applied_in_its_customers_shard_and_only_once(state, tmp_path):
    letters = {d["raw"]: d for d in listing(state)}
    moved = next(c for c in CUSTOMERS if shard_of(c, PARTITIONS) != 0)  # not the shard keeping the line
    before = events_of(state, moved)
    fixed_time = BAD_TIME.replace("yesterday", "2026-03-20T10:00:00+00:00")
    corrections = {letters[NO_CUSTOMER]["id"]: NO_CUSTOMER.replace('"type"', f'"customer_id": "{moved}", "type"'),
                   letters[BAD_TIME]["id"]: fixed_time}
    retry = rulecrm("dead-letters", "--state", state, "--retry", "--from", fix(tmp_path, corrections))
    assert retry.returncode == 3, retry.stderr  # the line that is not JSON is still rejected
    assert "re-ingested 2, duplicates 0, still rejected 1" in retry.stderr
    thanks = sorted(json.loads(line)["message"] for line in retry.stdout.splitlines())
    assert thanks == ["thanks for o-x", "thanks for o-y"]
    after = events_of(state, moved)
    assert list(after) == [shard_of(moved, PARTITIONS)]  # in its customer's shard, none other
    assert len(after[shard_of(moved, PARTITIONS)]) == len(before[shard_of(moved, PARTITIONS)]) + 1
    assert [d["raw"] for d in listing(state)] == [NOT_JSON]
    again = rulecrm("dead-letters", "--state", state, "--retry")
    assert again.returncode == 3 and "re-ingested 0, duplicates 0, still rejected 1" in again.stderr
    assert events_of(state, moved) == after


def test_a_retry_cut_short_between_the_two_shards_applies_the_line_once(state, monkeypatch):
    """The line is applied in its customer's shard, then the process dies before shard 0 resolves it:
    the same retry again finds the event (an id-less one: by its derived id) and only resolves it."""
    partitioned = PartitionedState.open(state)
    [letter] = [d for d in deadletters.list_shard_dead_letters(partitioned) if d["raw"] == NO_CUSTOMER]
    moved = next(c for c in CUSTOMERS if shard_of(c, PARTITIONS) != 0)
    corrections = {deadletters.shard_letter_id(letter["id"], partitioned):
                   NO_CUSTOMER.replace('"type"', f'"customer_id": "{moved}", "type"')}
    resolve = Store.resolve_dead_letter

    class Died(Exception):
        pass

    def dies_in_shard_0(store, id_, *, how):
        if store.path == partitioned.shard_path(0):
            raise Died()
        return resolve(store, id_, how=how)

    before = events_of(state, moved)
    monkeypatch.setattr(Store, "resolve_dead_letter", dies_in_shard_0)
    with pytest.raises(Died):
        deadletters.retry_shard_dead_letters(partitioned, corrections=corrections)
    monkeypatch.setattr(Store, "resolve_dead_letter", resolve)
    assert letter in deadletters.list_shard_dead_letters(partitioned)  # still kept in shard 0
    result = deadletters.retry_shard_dead_letters(partitioned, corrections=corrections)
    assert (result.applied, result.duplicates) == (0, 1)
    target = shard_of(moved, PARTITIONS)
    assert len(events_of(state, moved)[target]) == len(before[target]) + 1
    assert letter["id"] not in [d["id"] for d in deadletters.list_shard_dead_letters(partitioned)]


def test_remove_takes_shard_ids_and_refuses_a_bare_one(state, tmp_path):
    letters = listing(state)
    bare = letters[0]["id"].split(":")[1]
    for args in (["--remove", bare], ["--retry", "--from", fix(tmp_path, {int(bare): NOT_JSON})]):
        one_line_error(rulecrm("dead-letters", "--state", state, *args), f"write SHARD:ID (e.g. 0:{bare}")
    one_line_error(rulecrm("dead-letters", "--state", state, "--remove", letters[0]["id"], "--remove", "1:99"),
                   "no dead letter with id 1:99; nothing removed")
    one_line_error(rulecrm("dead-letters", "--state", state, "--remove", f"{PARTITIONS}:1"),
                   f"a shard from 0 to {PARTITIONS - 1}")
    removed = rulecrm("dead-letters", "--state", state, "--remove", letters[0]["id"], "--remove", letters[2]["id"])
    assert removed.returncode == 0 and "removed 2 dead letter(s)" in removed.stderr, removed.stderr
    assert listing(state) == [letters[1]]
