"""The live runner: wall-clock timers, late events, reload, one runner per state, SIGTERM, http in."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone

import pytest
from helpers import wait_for, write_rules

from rulecrm import plugins
from rulecrm.app.runner import Runner
from rulecrm.errors import StateError

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc).timestamp()


def rules_text(sends, template="thanks {customer.id}", extra=""):
    return f"""
shop: {{timezone: UTC}}
channels:
  out: {{type: jsonl, path: "{sends}"}}
rules:
  - id: thanks
    on: order.placed
    notify: {{to: customer, channel: out, kind: service, template: "{template}"}}
  - id: follow-up
    on: order.placed
    after: 1h
    notify: {{to: customer, channel: out, kind: service, template: "how is it?"}}
{extra}"""


def event(event_id, customer, at, type_="order.placed"):
    return json.dumps({"id": event_id, "type": type_, "customer_id": customer, "at": at,
                       "data": {"sku": "tea", "amount": 1}}) + "\n"


def sent(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8")]


class WallClock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def setup(tmp_path):
    sends = tmp_path / "sends.jsonl"
    rules = write_rules(tmp_path, rules_text(sends))
    events = tmp_path / "events.jsonl"
    events.write_text("")
    return tmp_path, rules, events, sends


def _runner(tmp_path, rules, events, clock, **kw):
    messages = []
    manager = plugins.build_plugin_manager(load_entry_points=False)
    runner = Runner(rules, str(tmp_path / "state.db"), sources=[f"jsonl:{events}"], manager=manager, clock=clock,
                    backend_name="python", on_message=messages.append, reload_interval=0, **kw)
    runner.start()
    return runner, messages


def test_timers_fire_on_the_wall_clock_and_late_events_are_applied(setup):
    tmp_path, rules, events, sends = setup
    clock = WallClock(T0)
    runner, _messages = _runner(tmp_path, rules, events, clock)
    try:
        with events.open("a") as handle:
            handle.write(event("o-1", "c-1", "2026-03-01T10:00:00Z"))
        runner.run(once=True)
        assert [s["text"] for s in sent(sends)] == ["thanks c-1"]
        clock.now = T0 + 1800
        runner.step()
        assert len(sent(sends)) == 1  # the follow-up is due at 11:00 by the wall clock
        clock.now = T0 + 3601
        runner.step()  # sends go on while the runner goes on: the channel has them a moment later
        assert wait_for(lambda: [s["text"] for s in sent(sends)][-1] == "how is it?")
        with events.open("a") as handle:  # older than the engine's time: applied late, at its own `at`
            handle.write(event("o-0", "c-2", "2026-03-01T09:00:00Z"))
        runner.step()
        assert wait_for(lambda: len(sent(sends)) == 4)
        texts = [s["text"] for s in sent(sends)]
        assert texts[-2:] == ["thanks c-2", "how is it?"]  # its follow-up (due 10:00) is already due; one
        # customer's messages on one channel go in decision order
        assert runner.stats["applied"] == 2
    finally:
        runner.close()


def test_restart_continues_where_it_stopped(setup):
    tmp_path, rules, events, sends = setup
    events.write_text(event("o-1", "c-1", "2026-03-01T10:00:00Z") + event("o-2", "c-2", "2026-03-01T10:00:00Z"))
    clock = WallClock(T0)
    runner, _ = _runner(tmp_path, rules, events, clock)
    runner.run(once=True)
    runner.close()
    with events.open("a") as handle:
        handle.write(event("o-3", "c-3", "2026-03-01T10:00:00Z") + "{broken\n")
    runner, messages = _runner(tmp_path, rules, events, clock)
    runner.run(once=True)
    runner.close()
    assert [s["key"] for s in sent(sends)] == ["thanks|c-1|o-1", "thanks|c-2|o-2", "thanks|c-3|o-3"]
    assert any(":4: rejected: not valid JSON" in m for m in messages)
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT line_no FROM dead_letters").fetchall() == [(4,)]


def test_a_good_edit_is_reloaded_and_timers_survive_it(setup):
    tmp_path, rules, events, sends = setup
    clock = WallClock(T0)
    runner, messages = _runner(tmp_path, rules, events, clock)
    try:
        with events.open("a") as handle:
            handle.write(event("o-1", "c-1", "2026-03-01T10:00:00Z"))
        runner.step()
        (rules / "rules.yaml").write_text(rules_text(sends, template="welcome back {customer.id}"))
        runner.step()
        runner.step()  # the edit settled for one interval: reloaded
        assert runner.stats["reloads"] == 1 and any("reloaded rules" in m for m in messages)
        with events.open("a") as handle:
            handle.write(event("o-2", "c-2", "2026-03-01T10:00:00Z"))
        clock.now = T0 + 3601
        runner.step()
        assert wait_for(lambda: len(sent(sends)) == 4)
        texts = [s["text"] for s in sent(sends)]
        assert texts[:2] == ["thanks c-1", "welcome back c-2"]
        assert texts.count("how is it?") == 2  # c-1's timer was set before the reload and still fired
    finally:
        runner.close()


def test_a_broken_edit_is_reported_with_its_position_and_the_old_rules_stay(setup):
    tmp_path, rules, events, sends = setup
    clock = WallClock(T0)
    runner, messages = _runner(tmp_path, rules, events, clock)
    try:
        broken = rules_text(sends).replace("after: 1h", "after: 1 fortnight")
        (rules / "rules.yaml").write_text(broken)
        runner.step()
        runner.step()
        assert runner.stats["reloads"] == 0
        position = [m for m in messages if "rules.yaml:" in m and ": error:" in m]
        assert position and position[0].split(":")[-4].isdigit()  # file:line:col: error: ...
        assert any("previous rules stay in force" in m for m in messages)
        with events.open("a") as handle:
            handle.write(event("o-1", "c-1", "2026-03-01T10:00:00Z"))
        runner.step()  # sends go on while the runner goes on: the answer comes in a later step
        assert wait_for(lambda: [s["text"] for s in sent(sends)] == ["thanks c-1"])
    finally:
        runner.close()


def _last_reload(state_path):
    with sqlite3.connect(f"file:{state_path}?mode=ro", uri=True) as db:
        (text,) = db.execute("SELECT value FROM meta WHERE key = 'last_reload'").fetchone()
    return json.loads(text)


def test_the_state_keeps_the_rules_loaded_at_start_and_each_reload_with_its_diagnostics(setup):
    """What the console's overview shows as the last reload."""
    tmp_path, rules, events, sends = setup
    clock = WallClock(T0)
    runner, _ = _runner(tmp_path, rules, events, clock)
    try:
        loaded = _last_reload(tmp_path / "state.db")
        assert loaded["what"] == "start" and loaded["ok"] is True and loaded["active_rules"] == 2
        assert loaded["at"] == "2026-03-01T10:00:00+00:00" and loaded["rules"] == str(rules)
        (rules / "rules.yaml").write_text(rules_text(sends).replace("after: 1h", "after: 1 fortnight"))
        clock.now += 5
        runner.step()
        runner.step()
        refused = _last_reload(tmp_path / "state.db")
        assert refused["what"] == "reload" and refused["ok"] is False and refused["active_rules"] is None
        assert refused["at"] == "2026-03-01T10:00:05+00:00"
        assert len(refused["diagnostics"]) == 1 and "rules.yaml:" in refused["diagnostics"][0]
        assert ": error: " in refused["diagnostics"][0]
        (rules / "rules.yaml").write_text(rules_text(sends, template="welcome back {customer.id}"))
        runner.step()
        runner.step()
        assert _last_reload(tmp_path / "state.db")["ok"] is True and runner.stats["reloads"] == 1
    finally:
        runner.close()


def test_a_second_runner_on_the_same_state_is_refused(setup):
    tmp_path, rules, events, _sends = setup
    runner, _ = _runner(tmp_path, rules, events, WallClock(T0))
    try:
        with pytest.raises(StateError, match="in use by another rulecrm process"):
            _runner(tmp_path, rules, events, WallClock(T0))
        done = subprocess.run(
            [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(tmp_path / "state.db"),
             "--once"], capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 1 and "in use by another rulecrm process" in done.stderr
    finally:
        runner.close()


def test_an_unknown_source_is_a_usage_error(setup):
    tmp_path, rules, events, _sends = setup
    done = subprocess.run(
        [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(tmp_path / "s.db"),
         "--source", "kafka:topic", "--once"], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and "unknown source 'kafka'" in done.stderr


def _start(args, tmp_path):
    log = open(tmp_path / "runner.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "rulecrm", "run", *args], stdout=subprocess.DEVNULL,
                               stderr=log, text=True)
    return process, tmp_path / "runner.log"



def test_sigterm_stops_cleanly_after_committing(setup):
    tmp_path, rules, events, sends = setup
    state = tmp_path / "state.db"
    process, log = _start(["--rules", str(rules), "--state", str(state), "--source", f"jsonl:{events}"], tmp_path)
    try:
        with events.open("a") as handle:
            handle.write(event("o-1", "c-1", "2026-03-01T10:00:00Z"))
        assert wait_for(lambda: "thanks|c-1|o-1" in _thanks_sent(sends))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopped: applied 1" in log.read_text()
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT status FROM actions WHERE key = 'thanks|c-1|o-1'").fetchone() == ("sent",)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_http_source_on_loopback_with_a_real_client(setup):
    tmp_path, rules, _events, sends = setup
    port = _free_port()
    process, log = _start(["--rules", str(rules), "--state", str(tmp_path / "state.db"),
                           "--source", f"http:127.0.0.1:{port}"], tmp_path)
    try:
        assert wait_for(lambda: "listening on" in log.read_text())
        body = (event("o-1", "c-1", "2026-03-01T10:00:00Z") + event("o-2", "c-2", "2026-03-01T10:00:00Z")).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/events", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
            assert json.loads(response.read()) == {"accepted": 2, "rejected": 0}
        # Each order also makes a follow-up that is already due (its hour passed long ago), so two
        # lines in the file may be c-1's two messages: wait for both thanks, not for any two lines.
        assert wait_for(lambda: _thanks_sent(sends) == {"thanks|c-1|o-1", "thanks|c-2|o-2"})
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert _thanks_sent(sends) == {"thanks|c-1|o-1", "thanks|c-2|o-2"}


def _thanks_sent(sends):
    return {s["key"] for s in sent(sends) if s["rule"] == "thanks"}


def test_http_source_refuses_a_non_loopback_host(setup):
    tmp_path, rules, _events, _sends = setup
    done = subprocess.run(
        [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(tmp_path / "s.db"),
         "--source", "http:0.0.0.0:8080", "--once"], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and "--allow-remote" in done.stderr
