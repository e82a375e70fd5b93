"""The command line as a subprocess, on the bundled example and on the real data in tests/data."""
from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import rulecrm

from bench.datasets import cdnow_events, olist_review_events

pytestmark = pytest.mark.slow  # the command line as subprocesses on the real data sets

REPO = Path(__file__).resolve().parents[2]



def read_actions(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_check_bundled_example_is_valid():
    result = rulecrm("check", REPO / "rules" / "tea-shop")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " error:" not in result.stdout


def test_check_reports_positions_and_exit_1(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("rules:\n  - id: x\n    on: review.created\n    wen: event.rating <= 2\n"
                                  "    tag: bad\n", encoding="utf-8")
    result = rulecrm("check", rules)
    assert result.returncode == 1
    line = next(text for text in result.stdout.splitlines() if " error:" in text)
    assert line.startswith(f"{rules / 'a.yaml'}:4:5: error:")
    assert "when" in line  # did you mean 'when'?


def test_replay_example_writes_every_field(tmp_path):
    out = tmp_path / "actions.jsonl"
    result = rulecrm("replay", "--rules", REPO / "rules/tea-shop", "--events", REPO / "rules/tea-shop/events.jsonl",
                     "--until", "2026-12-31T00:00:00", "--out", out)
    assert result.returncode == 0, result.stderr
    actions = read_actions(out)
    assert actions
    required = {"key", "rule", "customer_id", "kind", "channel", "to", "address", "due_at", "sent_at", "status",
                "reason", "message"}
    for action in actions:
        assert required <= action.keys()
        assert action["kind"] in {"tag", "untag", "notify", "escalate", "stage"}
        datetime.fromisoformat(action["due_at"]).utcoffset()  # has an offset
    assert "replayed" in result.stderr


def test_malformed_lines_exit_3_and_go_to_dead_letters(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type": "order.placed", "customer_id": "c1", "at": "2026-01-01T00:00:00Z", "data": {"amount": 5}}\n'
        "not json\n"
        '{"type": "order.placed", "customer_id": "c1", "at": "yesterday"}\n', encoding="utf-8")
    state = tmp_path / "state.db"
    result = rulecrm("replay", "--rules", REPO / "rules/tea-shop", "--events", events, "--state", state)
    assert result.returncode == 3, result.stderr
    assert f"{events}:2: rejected" in result.stderr and f"{events}:3: rejected" in result.stderr
    listed = rulecrm("dead-letters", "--state", state)
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(d["line_no"], d["raw"]) for d in letters] == [(2, "not json"),
                                                            (3, events.read_text().splitlines()[2])]
    retry = rulecrm("dead-letters", "--state", state, "--retry")
    assert retry.returncode == 3 and "still rejected 2" in retry.stderr


def test_rule_error_exits_1_and_runs_nothing(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("rules:\n  - id: x\n    on: order.placed\n    when: event.amount >\n"
                                  "    tag: t\n", encoding="utf-8")
    state = tmp_path / "state.db"
    result = rulecrm("replay", "--rules", rules, "--events", REPO / "rules/tea-shop/events.jsonl", "--state", state)
    assert result.returncode == 1
    assert f"{rules / 'a.yaml'}:4:" in result.stderr
    assert not state.exists()


@pytest.mark.parametrize("backend", ["python", "durable"])
def test_second_replay_with_state_outputs_nothing(tmp_path, backend):
    state, first, second = tmp_path / "s.db", tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    args = ["replay", "--rules", REPO / "rules/tea-shop", "--events", REPO / "rules/tea-shop/events.jsonl",
            "--state", state, "--backend", backend]
    assert rulecrm(*args, "--out", first).returncode == 0
    assert rulecrm(*args, "--out", second).returncode == 0
    assert read_actions(first) and read_actions(second) == []


@pytest.fixture(scope="module")
def cdnow_jsonl(tmp_path_factory, real_data):
    path = tmp_path_factory.mktemp("cdnow") / "cdnow.jsonl"
    cdnow_events(real_data / "cdnow" / "CDNOW_master.txt", path)
    return path


@pytest.fixture(scope="module")
def cdnow_raw(real_data):
    rows = []
    for line in (real_data / "cdnow" / "CDNOW_master.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1].isdigit():
            rows.append((parts[0], parts[1], int(parts[2]), float(parts[3])))
    return rows


@pytest.mark.parametrize("backend", ["python", "durable"])
def test_cdnow_replay_counts_match_an_independent_computation(tmp_path, cdnow_jsonl, cdnow_raw, backend):
    out = tmp_path / "actions.jsonl"
    result = rulecrm("replay", "--rules", REPO / "rules/cdnow", "--events", cdnow_jsonl, "--out", out,
                     "--backend", backend)
    assert result.returncode == 0, result.stderr
    actions = read_actions(out)
    by_rule = Counter(a["rule"] for a in actions)
    orders = Counter(r[0] for r in cdnow_raw)
    spent = Counter()
    for customer, _day, _n, amount in cdnow_raw:
        spent[customer] += amount
    assert len(cdnow_raw) == 69_659 and len(orders) == 23_570
    assert by_rule["thank-big-order"] == sum(1 for r in cdnow_raw if r[3] >= 50)
    assert by_rule["repeat-buyer"] == sum(1 for n in orders.values() if n >= 2)
    assert by_rule["big-spender"] == sum(1 for v in spent.values() if v >= 100 - 1e-9)
    # Everyone's last order is at least 90 days before the end of the data except the last quarter's buyers.
    last = {}
    for customer, day, _n, _amount in cdnow_raw:
        last[customer] = max(last.get(customer, day), day)
    end = max(day for _c, day, _n, _a in cdnow_raw)
    end_at = datetime.strptime(end, "%Y%m%d")
    went_dormant = {c for c, day in last.items() if datetime.strptime(day, "%Y%m%d") + timedelta(days=90) <= end_at}
    dormant_now = {a["customer_id"] for a in actions if a["kind"] == "stage" and a["to"] == "dormant"}
    assert went_dormant <= dormant_now
    # Marketing never exceeds the 7-day cap for anyone.
    sends = {}
    for a in actions:
        if a["status"] == "sent" and a["rule"] in ("repurchase", "win-back"):
            sends.setdefault(a["customer_id"], []).append(datetime.fromisoformat(a["sent_at"]))
    for times in sends.values():
        times.sort()
        assert all(b - a >= timedelta(days=7) for a, b in zip(times, times[1:], strict=False))


@pytest.mark.parametrize("backend", ["python", "durable"])
def test_olist_reviews_escalations_match_the_real_answer_times(tmp_path, real_data, backend):
    events = tmp_path / "reviews.jsonl"
    olist_review_events(real_data / "olist-sample", events)
    out = tmp_path / "actions.jsonl"
    result = rulecrm("replay", "--rules", REPO / "rules/reviews", "--events", events, "--out", out,
                     "--backend", backend)
    assert result.returncode == 0, result.stderr
    actions = read_actions(out)

    with open(real_data / "olist-sample" / "olist_order_reviews_dataset.csv", newline="", encoding="utf-8") as f:
        reviews = list(csv.DictReader(f))
    zone = ZoneInfo("America/Sao_Paulo")  # the rule set's shop time zone; durations are elapsed time

    def parse(text):
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).astimezone(timezone.utc)

    end = max(max(parse(r["review_creation_date"]), parse(r["review_answer_timestamp"]))
              for r in reviews if r["review_answer_timestamp"])
    bad = [r for r in reviews if int(r["review_score"]) <= 2]

    def escalated(review, after):
        due = parse(review["review_creation_date"]) + after
        answered = review["review_answer_timestamp"]
        return due <= end and (not answered or parse(answered) > due)

    counts = Counter((a["rule"], a["kind"], a["step"]) for a in actions)
    assert counts[("bad-review", "notify", None)] == len(bad)
    assert counts[("neutral-review", "notify", None)] == sum(1 for r in reviews if r["review_score"] == "3")
    assert counts[("bad-review", "escalate", 1)] == sum(escalated(r, timedelta(hours=24)) for r in bad)
    assert counts[("bad-review", "escalate", 2)] == sum(escalated(r, timedelta(days=7)) for r in bad)


def test_dead_letters_fixed_and_retried_are_applied(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"id": "r1", "type": "review.created", "customer_id": "c1", "at": "2026-03-01 10:00",'
                      ' "data": {"review_id": "r1", "order_id": "o1", "rating": "1", "text": "bad"}}\n',
                      encoding="utf-8")
    state = tmp_path / "state.db"
    first = rulecrm("replay", "--rules", REPO / "rules/tea-shop", "--events", events, "--state", state)
    assert first.returncode == 3 and "rating" in first.stderr
    listing = [json.loads(line) for line in rulecrm("dead-letters", "--state", state).stdout.splitlines()]
    assert len(listing) == 1
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps({**listing[0], "raw": listing[0]["raw"].replace('"1"', "1")}) + "\n",
                     encoding="utf-8")
    retry = rulecrm("dead-letters", "--state", state, "--retry", "--from", fixed)
    assert retry.returncode == 0, retry.stderr
    assert "re-ingested 1" in retry.stderr
    assert rulecrm("dead-letters", "--state", state).stdout == ""


def test_init_creates_a_starter_that_checks_and_replays(tmp_path):
    target = tmp_path / "shop"
    made = rulecrm("init", target)
    assert made.returncode == 0, made.stderr
    assert rulecrm("check", target / "rules").returncode == 0
    replayed = rulecrm("replay", "--rules", target / "rules", "--events", target / "events.jsonl", "--out", "-")
    assert replayed.returncode == 0 and replayed.stdout.count("\n") > 5
    again = rulecrm("init", target)
    assert again.returncode == 1 and "already has files" in again.stderr
