"""Rejected-line messages mask phone numbers and e-mail addresses, through the real command line.

`replay`, `run` (jsonl and http sources) and `dead-letters --retry` print `file:line: rejected: ...`
on stderr; the http source answers the errors to its client. The dead-letter store keeps each raw
line as it came (so it can be fixed) but its `error` masked.
"""
from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from helpers import rulecrm, write_events, write_rules

pytestmark = pytest.mark.slow  # real runner and replay processes, an http source

PHONE, EMAIL = "+8613800001234", "li.ming@example.com"
PERSONAL = (PHONE, "8613800001234", "13800001234", EMAIL, "li.ming")
RULES = 'rules:\n  - {id: hi, on: chat.received, notify: {to: customer, template: "hi"}}\n'
BAD_LINES = [
    {"id": "r1", "type": "review.created", "customer_id": "c1", "at": "2026-03-01T10:00:00Z",
     "data": {"review_id": "r1", "rating": PHONE}},
    {"id": "r2", "type": "review.created", "customer_id": "c1", "at": "2026-03-01T10:00:00Z",
     "data": {"review_id": "r2", "rating": EMAIL}},
    {"id": "u1", "type": "customer.upserted", "customer_id": "c1", "at": "2026-03-01T10:00:00Z",
     "data": {"phone": 8613800001234}},
    {"id": "u2", "type": "customer.upserted", "customer_id": "c1", "at": PHONE, "data": {}},
]
MASKED = ("'+***1234' (string)", "'l***@example.com' (string)", "found ***1234 (number)", "found '+***1234'")



def assert_masked(text):
    assert all(value not in text for value in PERSONAL), text
    assert all(masked in text for masked in MASKED), text


def dead_letters(state):
    with sqlite3.connect(state) as db:
        return db.execute("SELECT raw, error FROM dead_letters ORDER BY line_no").fetchall()


def assert_store_keeps_raw_lines_and_masks_errors(state):
    rows = dead_letters(state)
    assert [json.loads(raw) for raw, _error in rows] == BAD_LINES  # unmasked: fixable
    assert_masked("\n".join(error for _raw, error in rows))


def test_replay_and_dead_letters_retry_mask_personal_data(tmp_path):
    rules = write_rules(tmp_path, RULES)
    events = write_events(tmp_path, BAD_LINES)
    state = tmp_path / "state.db"
    done = rulecrm("replay", "--rules", rules, "--events", events, "--state", state, "--out", tmp_path / "out.jsonl")
    assert done.returncode == 3, done.stderr
    assert done.stderr.count(": rejected: ") == len(BAD_LINES)
    assert_masked(done.stderr)
    assert_store_keeps_raw_lines_and_masks_errors(state)

    listing = rulecrm("dead-letters", "--state", state)
    assert PHONE in listing.stdout  # the raw lines, to be fixed
    assert_masked("\n".join(json.loads(line)["error"] for line in listing.stdout.splitlines()))

    retried = rulecrm("dead-letters", "--state", state, "--retry")
    assert retried.returncode == 3, retried.stderr
    assert retried.stderr.count(": rejected: ") == len(BAD_LINES)
    assert_masked(retried.stderr)


def test_run_with_a_jsonl_source_masks_personal_data(tmp_path):
    rules = write_rules(tmp_path, RULES)
    events = write_events(tmp_path, BAD_LINES)
    state = tmp_path / "state.db"
    done = rulecrm("run", "--rules", rules, "--state", state, "--source", f"jsonl:{events}", "--once")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(": rejected: ") == len(BAD_LINES)
    assert_masked(done.stderr)
    assert_store_keeps_raw_lines_and_masks_errors(state)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_http_source_answers_and_logs_masked_errors(tmp_path):
    rules = write_rules(tmp_path, RULES)
    state, port, log = tmp_path / "state.db", _free_port(), tmp_path / "runner.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state",
                                    str(state), "--source", f"http:127.0.0.1:{port}"],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        body = "".join(json.dumps(line) + "\n" for line in BAD_LINES).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/events", data=body, method="POST")
        try:
            urllib.request.urlopen(request, timeout=30)
            raise AssertionError("invalid lines must not be answered as a success")
        except urllib.error.HTTPError as error:
            assert error.code == 400
            answer = json.loads(error.read())
        assert answer["rejected"] == len(BAD_LINES)
        assert_masked(json.dumps(answer["errors"], ensure_ascii=False))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert_masked(log.read_text())
    assert_store_keeps_raw_lines_and_masks_errors(state)
