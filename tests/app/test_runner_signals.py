"""SIGTERM and SIGINT stop `rulecrm run` within 2 s, whatever it waits for, with exit status 0.

Real runner processes deliver through the webhook channel to an HTTP endpoint in this process,
which can hold its answers (a slow provider). Sends not yet started stay `queued` in the state and
a restart delivers them. The unit tests at the end cover the pieces: the rate limiter's wait, the
bounded channel call and the signal relay.
"""
from __future__ import annotations

import configparser
import contextlib
import gc
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import FakeTime, wait_for, write_rules

from rulecrm.app.stopping import BoundedCalls, Interrupted, StopSignals
from rulecrm.channels.ratelimit import RateLimiter

STOP_WITHIN = 2.0  # seconds (docs/running.md, Stopping)


class Receiver:
    """The webhook's other end: records the key of each POST; answers at once, or when released."""

    def __init__(self):
        self.keys: list[str] = []
        self.answer = threading.Event()
        self.answer.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.keys.append(body["key"])
                receiver.answer.wait(60)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a runner that gave a send up closes the connection before the answer

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.answer.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def webhook_rules(tmp_path, url, *, per_minute=None, concurrency=None):
    limit = f", per_minute: {per_minute}" if per_minute else ""
    limit += f", concurrency: {concurrency}" if concurrency else ""
    return write_rules(tmp_path, f"""
shop: {{timezone: UTC}}
channels:
  hook: {{type: webhook, url: "{url}", timeout: 60, secret_env: HOOK_SECRET{limit}}}
rules:
  - id: thanks
    on: order.placed
    notify: {{to: customer, channel: hook, kind: service, template: "thanks {{customer.id}}"}}
""")


def write_events(path, count):
    with path.open("w") as handle:
        for n in range(1, count + 1):
            handle.write(json.dumps({"id": f"o-{n}", "type": "order.placed", "customer_id": f"c-{n}",
                                     "at": f"2026-03-01T10:00:{n:02d}Z", "data": {"sku": "tea", "amount": 1}}) + "\n")


def key(n):
    return f"thanks|c-{n}|o-{n}"


ENV = {**os.environ, "HOOK_SECRET": "s3cret-for-tests"}


def start_runner(tmp_path, rules, events, *extra):
    log = tmp_path / "runner.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(tmp_path / "state.db"),
         "--source", f"jsonl:{events}", *extra],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=ENV,
    )
    return process, log



def outbox(state):
    """{key: (status, attempts)} of the `thanks` actions, read from the state file itself."""
    with contextlib.closing(sqlite3.connect(state)) as db:
        rows = db.execute("SELECT key, status, json_extract(json, '$.attempts') FROM actions WHERE rule = 'thanks'")
        return {k: (status, attempts) for k, status, attempts in rows}


def status_of(state, action_key):
    """The action's status while the runner writes the state (None before it exists)."""
    try:
        return outbox(state).get(action_key, (None,))[0]
    except sqlite3.OperationalError:  # the runner has not created its tables yet
        return None


def stop(process, sig=signal.SIGTERM):
    """Send `sig`; returns (exit status, seconds it took to exit)."""
    started = time.monotonic()
    process.send_signal(sig)
    try:
        status = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    return status, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_while_waiting_for_a_rate_limit_token_ends_within_2s(tmp_path, receiver, sig):
    events = tmp_path / "events.jsonl"
    write_events(events, 4)
    rules = webhook_rules(tmp_path, receiver.url, per_minute=1)  # the 2nd send would wait a minute
    state = tmp_path / "state.db"
    process, log = start_runner(tmp_path, rules, events)
    try:
        assert wait_for(lambda: status_of(state, key(1)) == "sent")
        status, took = stop(process, sig)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert status == 0 and took < STOP_WITHIN, (status, took, text)
    assert "Traceback" not in text and "stopped: applied 4" in text
    assert outbox(state) == {key(1): ("sent", 1), key(2): ("queued", None), key(3): ("queued", None),
                             key(4): ("queued", None)}
    assert receiver.keys == [key(1)]

    # a restart delivers what was left queued (with room in the budget this time), each once
    webhook_rules(tmp_path, receiver.url, per_minute=100)
    again = subprocess.run([sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
                            "--once"], capture_output=True, text=True, env=ENV, timeout=120)
    assert again.returncode == 0, again.stderr
    assert sorted(receiver.keys) == [key(n) for n in range(1, 5)]
    assert {status for status, _attempts in outbox(state).values()} == {"sent"}


@pytest.mark.slow
@pytest.mark.parametrize("concurrency, in_flight", [(1, (1,)), (None, (1, 2, 3))], ids=["one-at-a-time", "concurrent"])
def test_sigterm_during_slow_sends_gives_them_up_within_2s_and_records_nothing(tmp_path, receiver, concurrency,
                                                                                  in_flight):
    """With `concurrency: 1` one send is in flight and the two others never start; with the default
    concurrency all three are in flight. Either way none is recorded, and only those repeat."""
    events = tmp_path / "events.jsonl"
    write_events(events, 3)
    rules = webhook_rules(tmp_path, receiver.url, concurrency=concurrency)
    state = tmp_path / "state.db"
    receiver.answer.clear()  # the provider takes its time: up to a minute
    process, log = start_runner(tmp_path, rules, events)
    try:
        assert wait_for(lambda: sorted(receiver.keys) == [key(n) for n in in_flight])
        status, took = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert status == 0 and took < STOP_WITHIN, (status, took, text)
    assert "Traceback" not in text
    # a send given up is not recorded as anything: it stays queued, like those never started
    assert outbox(state) == {key(n): ("queued", None) for n in (1, 2, 3)}

    receiver.answer.set()
    again = subprocess.run([sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
                            "--once"], capture_output=True, text=True, env=ENV, timeout=120)
    assert again.returncode == 0, again.stderr
    assert outbox(state) == {key(n): ("sent", 1) for n in (1, 2, 3)}
    # at least once: only the sends in flight at the stop arrive twice (with the same key)
    assert Counter(receiver.keys) == {key(n): 2 if n in in_flight else 1 for n in (1, 2, 3)}


@pytest.mark.slow
def test_a_send_answered_soon_after_sigterm_is_recorded_sent(tmp_path, receiver):
    events = tmp_path / "events.jsonl"
    write_events(events, 3)
    rules = webhook_rules(tmp_path, receiver.url, concurrency=1)
    state = tmp_path / "state.db"
    receiver.answer.clear()
    process, log = start_runner(tmp_path, rules, events)
    try:
        assert wait_for(lambda: receiver.keys == [key(1)])
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.1)  # the answer comes while the runner is already stopping
        receiver.answer.set()
        status = process.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert status == 0 and took < STOP_WITHIN, (status, took, log.read_text())
    assert outbox(state) == {key(1): ("sent", 1), key(2): ("queued", None), key(3): ("queued", None)}
    assert receiver.keys == [key(1)]


def _catches_sigterm(pid):
    """Whether the process has a handler for SIGTERM yet (Linux: the SigCgt mask in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except FileNotFoundError:
        return False
    return False


@pytest.mark.slow
def test_a_stop_signal_right_after_start_is_a_clean_stop(tmp_path):
    """Signals at many instants of start-up: importing, locking and checking the state, loading the
    rules, opening the source, the first steps. Each one is a clean stop: exit 0, no traceback.

    Instants are counted from when the process catches SIGTERM: `rulecrm/__main__.py` installs the
    handlers before it imports anything else. Before that only the interpreter itself is starting
    (a few tens of milliseconds), and there the signal's default action applies.
    """
    sends = tmp_path / "sends.jsonl"
    rules = write_rules(tmp_path, f"""
shop: {{timezone: UTC}}
channels:
  out: {{type: jsonl, path: "{sends}"}}
rules:
  - id: thanks
    on: order.placed
    notify: {{to: customer, channel: out, kind: service, template: "thanks {{customer.id}}"}}
""")
    events = tmp_path / "events.jsonl"
    write_events(events, 3)
    rng = random.Random(7)
    delays = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5] + [rng.uniform(0, 0.5) for _ in range(5)]
    for n, delay in enumerate(delays):
        sig = signal.SIGINT if n % 4 == 3 else signal.SIGTERM
        process, log = start_runner(tmp_path, rules, events)
        try:
            assert wait_for(lambda: _catches_sigterm(process.pid) or process.poll() is not None, timeout=30)  # noqa: B023 (called at once)
            time.sleep(delay)
            status, took = stop(process, sig)
        finally:
            if process.poll() is None:
                process.kill()
        text = log.read_text()
        assert (status, "Traceback" in text) == (0, False), (delay, sig, status, text)
        assert took < STOP_WITHIN, (delay, took)
        assert text.splitlines()[-1].startswith("stopped: applied "), text
    # whatever those stops interrupted, the state is sound and every event is applied once
    done = subprocess.run([sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state",
                           str(tmp_path / "state.db"), "--source", f"jsonl:{events}", "--once"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(line)["key"] for line in sends.read_text().splitlines()) == [key(n) for n in (1, 2, 3)]


def test_the_entry_point_catches_stop_signals_before_importing_the_command_line(monkeypatch):
    """The window in which a signal still kills `rulecrm run` is the interpreter's own start only."""
    import rulecrm.app.stopping
    from rulecrm.__main__ import main

    seen = {}

    def entry(*, started):
        seen.setdefault("handler", signal.getsignal(signal.SIGTERM))
        started()  # the collector as it was, once the command line has started (tests/cli/test_startup_collection.py)

    command_line = types.ModuleType("rulecrm.cli")
    command_line.entry = entry
    monkeypatch.setitem(sys.modules, "rulecrm.cli", command_line)  # stands for the heavy imports
    monkeypatch.setattr(sys, "argv", ["rulecrm", "run", "--rules", "rules.yaml", "--state", "s.db"])
    before = signal.getsignal(signal.SIGTERM)
    collecting = gc.isenabled()
    try:
        main()
        installed = rulecrm.app.stopping._current
        assert installed is not None and seen["handler"] == installed._handle
    finally:
        gc.unfreeze()  # what main() froze: this test process goes on
        if collecting:
            gc.enable()
        if rulecrm.app.stopping._current is not None:
            rulecrm.app.stopping._current.keep = False
            rulecrm.app.stopping._current.release()
    assert signal.getsignal(signal.SIGTERM) is before
    # ... and the `rulecrm` script is that entry point
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    assert "rulecrm = rulecrm.__main__:main" in config["options.entry_points"]["console_scripts"]


# -- the pieces -------------------------------------------------------------------------------


def test_a_rate_limit_wait_ends_soon_after_stop_and_spends_no_token():
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep, stop=lambda: len(fake.sleeps) >= 3)
    limiter.acquire("b", 1)
    with pytest.raises(Interrupted):
        limiter.acquire("b", 1)  # would wait 60 s; looks at `stop` between short slices
    assert len(fake.sleeps) == 3 and max(fake.sleeps) <= 0.1
    assert limiter.delay("b", 1) == pytest.approx(60 - sum(fake.sleeps))  # the token was not spent


def test_without_stop_the_limiter_waits_the_whole_minute():
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    limiter.acquire("b", 1)
    assert limiter.acquire("b", 1) == pytest.approx(60.0)
    assert fake.sleeps == [pytest.approx(60.0)]


def test_bounded_calls_return_answers_and_raise_the_calls_own_errors():
    calls = BoundedCalls(lambda: False)
    assert calls(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        calls(lambda: 1 / 0)
    thread_names = {calls(lambda: threading.current_thread().name) for _ in range(3)}
    assert thread_names == {"rulecrm-channel-calls"}  # one worker thread, whatever the number of calls


def test_a_call_in_flight_is_given_up_after_the_grace_once_stopping():
    stopping = threading.Event()
    release = threading.Event()
    calls = BoundedCalls(stopping.is_set, grace=0.2)
    threading.Timer(0.1, stopping.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        calls(release.wait, 30)
    assert time.monotonic() - started < 1.0
    with pytest.raises(Interrupted):
        calls(lambda: "never started")  # stopping: nothing new is started
    closed = calls.finish(lambda: ["closed"])  # closing runs apart from the stuck call
    assert closed == ["closed"]
    release.set()


def test_a_call_that_ends_within_the_grace_keeps_its_answer():
    stopping = threading.Event()
    calls = BoundedCalls(stopping.is_set, grace=5.0)

    def slow_send():
        stopping.set()  # the stop comes while the call is under way
        time.sleep(0.2)
        return "delivered"

    assert calls(slow_send) == "delivered"


def test_stop_signals_call_back_from_the_relay_thread_and_give_the_handlers_back():
    before = signal.getsignal(signal.SIGTERM)
    signals = StopSignals()
    signals.install()
    called = threading.Event()
    threads = []
    signals.on_stop(lambda: (threads.append(threading.current_thread().name), called.set()))
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert called.wait(10)
        assert signals.requested and threads == ["rulecrm-stop-signals"]
        late = threading.Event()
        signals.on_stop(late.set)  # registered after the signal: called at once
        assert late.is_set()
    finally:
        signals.release()
    assert signal.getsignal(signal.SIGTERM) is before
