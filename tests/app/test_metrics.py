"""`rulecrm run --metrics HOST:PORT` (Prometheus metrics and /healthz) and `--log-format json`.

Real runner processes follow a jsonl file and deliver to jsonl files (and to a webhook endpoint in this
process, which can hold its answers); the tests scrape /metrics over HTTP and read it with
prometheus_client's own parser. The health states that a subprocess cannot show deterministically
(before start-up ends, from the stop on) are checked on a runner in this process.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from helpers import wait_for, write_rules
from prometheus_client.parser import text_string_to_metric_families
from test_runner_signals import Receiver

from rulecrm import plugins
from rulecrm.app.metrics import RunMetrics
from rulecrm.app.metrics_server import MetricsServer
from rulecrm.app.outbox_depth import OutboxDepth
from rulecrm.app.runner import Runner
from rulecrm.engine.profile import Profile
from rulecrm.state.store import Store

pytestmark = pytest.mark.slow  # starts runner processes and servers

ENV = {**os.environ, "HOOK_SECRET": "s3cret-for-tests"}
PHONE = "+8613800001234"


# -- helpers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def order(event_id, customer, at=None):
    at = at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"id": event_id, "type": "order.placed", "customer_id": customer, "at": at,
                       "data": {"sku": "tea", "amount": 1}}) + "\n"


def bad_line(event_id):
    """An order whose `at` is a phone number: rejected, and the number must never be shown whole."""
    return json.dumps({"id": event_id, "type": "order.placed", "customer_id": "c-9", "at": PHONE}) + "\n"


def append(path, text):
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def scrape(port) -> dict:
    """{(sample name, sorted labels): value} of one GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def metric(port, name, **labels):
    return scrape(port).get((name, tuple(sorted(labels.items()))))


def healthz(port) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def refuses_connections(port) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def rulecrm_run(rules, *args) -> list[str]:
    """The command line of `rulecrm run` (on the python backend: the same messages on every Python)."""
    return [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--backend", "python", *map(str, args)]


class RunnerProcess:
    """`rulecrm run` as a subprocess, its stderr in a file."""

    def __init__(self, tmp_path, rules, *args):
        self.log = tmp_path / "runner.log"
        with self.log.open("w") as stderr:
            self.process = subprocess.Popen(rulecrm_run(rules, *args), stdout=subprocess.DEVNULL, stderr=stderr,
                                            env=ENV)

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def runners():
    started = []

    def start(*args):
        started.append(RunnerProcess(*args))
        return started[-1]

    yield start
    for runner in started:
        runner.kill()


SHOP = """
shop: {{timezone: UTC}}
channels:
  out: {{type: jsonl, path: "{sends}"}}
  broken: {{type: jsonl, path: "{directory}"}}
rules:
  - id: thanks
    on: order.placed
    notify: {{to: customer, channel: out, kind: service, template: "{template}"}}
  - id: later
    on: order.placed
    after: 1s
    notify: {{to: customer, channel: out, kind: service, template: "how is it?"}}
  - id: alert
    on: order.placed
    notify: {{to: customer, channel: broken, kind: service, template: "never arrives"}}
"""


@pytest.fixture
def shop(tmp_path):
    """Rules delivering to a file (`out`) and to a directory (`broken`: every send fails), and an events file."""
    broken = tmp_path / "not-a-file"
    broken.mkdir()

    def rules(template="thanks {customer.id}"):
        return write_rules(tmp_path, SHOP.format(sends=tmp_path / "sends.jsonl", directory=broken, template=template))

    events = tmp_path / "events.jsonl"
    events.write_text("")
    return tmp_path, rules, events


# -- the metrics of a real runner ------------------------------------------------------------------
def test_a_runner_counts_events_actions_timers_deliveries_and_dead_letters(shop, runners):
    tmp_path, rules, events = shop
    port = free_port()
    runner = runners(tmp_path, rules(), "--state", tmp_path / "state.db", "--source", f"jsonl:{events}",
                     "--metrics", f"127.0.0.1:{port}")
    source = f"jsonl:{events}"
    assert wait_for(lambda: healthz_or_none(port) == (200, {"state": "running"})), runner.stderr()
    append(events, order("o-1", "c-1") + bad_line("o-x") + order("o-2", "c-2"))

    assert wait_for(lambda: metric(port, "rulecrm_timer_lag_seconds_count") == 2), runner.stderr()  # `later` fired
    assert wait_for(lambda: metric(port, "rulecrm_actions_total", rule="later", status="sent") == 2)
    samples = scrape(port)

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("rulecrm_events_applied_total", source=source) == 2
    assert value("rulecrm_events_rejected_total", source=source) == 1
    assert value("rulecrm_events_duplicate_total", source=source) == 0
    assert value("rulecrm_dead_letters_total", reason="invalid") == 1
    assert value("rulecrm_dead_letters_total", reason="timer") == 0
    assert value("rulecrm_event_decision_latency_seconds_count") == 2
    assert value("rulecrm_event_decision_latency_seconds_sum") >= 0
    # decided: each message queued for its channel, then answered; the timers' actions too
    for rule in ("thanks", "later", "alert"):
        assert value("rulecrm_actions_total", rule=rule, status="queued") == 2, rule
    assert value("rulecrm_actions_total", rule="thanks", status="sent") == 2
    assert value("rulecrm_actions_total", rule="alert", status="sent") is None
    assert value("rulecrm_timer_lag_seconds_sum") >= 0
    assert value("rulecrm_delivery_duration_seconds_count", channel="out") == 4
    assert value("rulecrm_shards_owned") == 0
    assert value("rulecrm_reloads_total", result="ok") == 0

    # the broken channel: both sends failed and wait for a retry (after 1 to 2 s, then longer)
    assert wait_for(lambda: metric(port, "rulecrm_outbox_depth", status="failed") == 2)
    samples = scrape(port)
    assert value("rulecrm_delivery_failures_total", channel="broken", status="failed") >= 2
    assert value("rulecrm_actions_total", rule="alert", status="failed") >= 2
    assert value("rulecrm_delivery_failures_total", channel="out", status="failed") is None
    assert value("rulecrm_outbox_depth", status="queued") == 0
    assert value("rulecrm_outbox_oldest_queued_age_seconds") == 0

    assert runner.stop() == 0
    assert refuses_connections(port)  # the endpoint ends with the runner
    assert "Traceback" not in runner.stderr()


def healthz_or_none(port):
    try:
        return healthz(port)
    except OSError:  # not listening yet
        return None


def test_reloads_are_counted_by_result(shop, runners):
    tmp_path, rules, events = shop
    port = free_port()
    runner = runners(tmp_path, rules(), "--state", tmp_path / "state.db", "--source", f"jsonl:{events}",
                     "--metrics", f"127.0.0.1:{port}")
    assert wait_for(lambda: healthz_or_none(port) == (200, {"state": "running"})), runner.stderr()
    assert metric(port, "rulecrm_reloads_total", result="ok") == 0
    rules(template="welcome back {customer.id}")
    assert wait_for(lambda: metric(port, "rulecrm_reloads_total", result="ok") == 1), runner.stderr()
    rules_file = tmp_path / "rules" / "rules.yaml"
    rules_file.write_text(rules_file.read_text().replace("after: 1s", "after: 1 fortnight"))
    assert wait_for(lambda: metric(port, "rulecrm_reloads_total", result="failed") == 1), runner.stderr()
    assert metric(port, "rulecrm_reloads_total", result="ok") == 1
    assert runner.stop() == 0


@pytest.fixture
def receiver():
    made = Receiver()  # the slow provider of the stop tests
    made.answer.clear()  # holds every answer until the test lets it go
    yield made
    made.close()


def test_the_oldest_queued_action_ages_until_its_channel_answers(tmp_path, runners, receiver):
    rules = write_rules(tmp_path, f"""
shop: {{timezone: UTC}}
channels:
  hook: {{type: webhook, url: "{receiver.url}", timeout: 60, secret_env: HOOK_SECRET}}
rules:
  - id: thanks
    on: order.placed
    notify: {{to: customer, channel: hook, kind: service, template: "thanks {{customer.id}}"}}
""")
    events = tmp_path / "events.jsonl"
    events.write_text(order("o-1", "c-1"))
    port = free_port()
    runner = runners(tmp_path, rules, "--state", tmp_path / "state.db", "--source", f"jsonl:{events}",
                     "--metrics", f"127.0.0.1:{port}")
    assert wait_for(lambda: receiver.keys == ["thanks|c-1|o-1"]), runner.stderr()  # in flight, not answered
    assert metric(port, "rulecrm_outbox_depth", status="queued") == 1
    assert wait_for(lambda: metric(port, "rulecrm_outbox_oldest_queued_age_seconds") > 0)
    receiver.answer.set()
    assert wait_for(lambda: metric(port, "rulecrm_outbox_depth", status="queued") == 0)
    assert metric(port, "rulecrm_outbox_oldest_queued_age_seconds") == 0
    assert metric(port, "rulecrm_delivery_duration_seconds_count", channel="hook") == 1
    assert runner.stop() == 0


def test_a_runner_on_a_partitioned_state_shows_its_shards(shop, runners):
    tmp_path, rules, events = shop
    events.write_text("".join(order(f"o-{n}", f"c-{n}") for n in range(1, 7)))
    port = free_port()
    runner = runners(tmp_path, rules(), "--state", tmp_path / "shards", "--partitions", 3,
                     "--source", f"jsonl:{events}", "--metrics", f"127.0.0.1:{port}")
    source = f"jsonl:{events}"
    assert wait_for(lambda: healthz_or_none(port) == (200, {"state": "running"})), runner.stderr()
    assert wait_for(lambda: metric(port, "rulecrm_events_applied_total", source=source) == 6), runner.stderr()
    samples = scrape(port)
    assert samples[("rulecrm_shards_owned", ())] == 3
    shards = {dict(labels)["shard"]: dict(labels)["partitions"] for (name, labels) in samples
              if name == "rulecrm_shard_info"}
    assert shards == {"0": "3", "1": "3", "2": "3"}
    # the shards' sessions feed one set of metrics
    assert wait_for(lambda: metric(port, "rulecrm_actions_total", rule="thanks", status="sent") == 6)
    assert runner.stop() == 0


# -- /healthz through a runner's life (in this process, where each moment can be waited for) -----------
def test_healthz_is_503_while_starting_200_while_running_503_from_the_stop_on(shop):
    tmp_path, rules, events = shop
    metrics = RunMetrics()
    server = MetricsServer("127.0.0.1", 0, metrics.registry, metrics.health)
    server.start()
    port = server.port
    manager = plugins.build_plugin_manager(load_entry_points=False)
    metrics.attach(manager)
    runner = Runner(rules(), str(tmp_path / "state.db"), sources=[f"jsonl:{events}"], manager=manager,
                    backend_name="python", observer=metrics)
    started, go = threading.Event(), threading.Event()

    def life():  # the runner's own thread, the one its state belongs to
        try:
            runner.start()
            started.set()
            if go.wait(60):
                runner.run()
        finally:
            runner.close()

    living = threading.Thread(target=life)
    try:
        assert healthz(port) == (503, {"state": "starting"})
        living.start()
        assert started.wait(60)
        assert healthz(port) == (503, {"state": "starting"})  # sources open, but nothing taken yet
        go.set()
        assert wait_for(lambda: healthz(port) == (200, {"state": "running"}))
        append(events, order("o-1", "c-1"))
        assert wait_for(lambda: metric(port, "rulecrm_events_applied_total", source=f"jsonl:{events}") == 1)
        runner.stop()  # as SIGTERM does, from another thread
        status, body = healthz(port)  # the runner may have finished stopping already
        assert status == 503 and body["state"] in ("stopping", "stopped")
        living.join(timeout=60)
        assert not living.is_alive()
        assert healthz(port) == (503, {"state": "stopped"})
        assert server._thread.name == "rulecrm-metrics"
        assert server._thread.daemon  # never what keeps the process alive
    finally:
        go.set()
        runner.stop()
        living.join(timeout=60)
        metrics.detach()
        server.close()
    assert refuses_connections(port)
    assert not [t for t in threading.enumerate() if t.name == "rulecrm-metrics"]


def test_a_stop_during_start_up_is_never_reported_running(shop):
    metrics = RunMetrics()
    metrics.state_changed("stopping")  # a SIGTERM while the rules were loading
    metrics.state_changed("running")
    assert metrics.health() == (False, "stopping")


# -- what is counted once ----------------------------------------------------------------------------
def test_a_step_redone_after_an_engine_failure_is_counted_once(shop, monkeypatch):
    """The step's first try queues actions and is rolled back; redone item by item, each counts once."""
    tmp_path, rules, events = shop
    original = Profile.apply

    def apply(self, event, **kwargs):
        if event.id == "o-boom":
            raise RuntimeError("injected failure")
        return original(self, event, **kwargs)

    monkeypatch.setattr(Profile, "apply", apply)
    events.write_text(order("o-1", "c-1") + order("o-boom", "c-2") + order("o-3", "c-3"))
    metrics = RunMetrics()
    manager = plugins.build_plugin_manager(load_entry_points=False)
    metrics.attach(manager)
    runner = Runner(rules(), str(tmp_path / "state.db"), sources=[f"jsonl:{events}"], manager=manager,
                    backend_name="python", observer=metrics)
    runner.start()
    try:
        runner.step()  # the three lines in one step
    finally:
        runner.close()
        metrics.detach()
    value = metrics.registry.get_sample_value
    assert value("rulecrm_actions_total", {"rule": "thanks", "status": "queued"}) == 2
    assert value("rulecrm_events_applied_total", {"source": f"jsonl:{events}"}) == 2
    assert value("rulecrm_events_rejected_total", {"source": f"jsonl:{events}"}) == 1
    assert value("rulecrm_dead_letters_total", {"reason": "engine_failure"}) == 1


def test_the_outbox_depth_follows_queued_and_failed_actions(tmp_path):
    store = Store.open(str(tmp_path / "state.db"))
    try:
        store.put_actions([{"key": "a", "status": "queued"}, {"key": "b", "status": "failed"},
                           {"key": "c", "status": "sent"}, {"key": "d", "status": "queued"}])
        depth = OutboxDepth()
        depth.load([store], now=100.0)  # left by an earlier run: waiting since this one started
    finally:
        store.close()
    assert (depth.queued_count, depth.failed_count, depth.oldest_queued_at) == (2, 1, 100.0)
    depth.add_queued(["e"], now=105.0)
    depth.answered("a", "sent")
    depth.answered("d", "failed")  # its first attempt failed: a retry is scheduled
    assert (depth.queued_count, depth.failed_count, depth.oldest_queued_at) == (1, 2, 105.0)
    depth.answered("b", "dead")
    depth.answered("d", "sent")
    depth.answered("e", "sent")
    assert (depth.queued_count, depth.failed_count, depth.oldest_queued_at) == (0, 0, None)


# -- the command line --------------------------------------------------------------------------------
def test_a_non_loopback_metrics_host_needs_allow_remote(shop):
    tmp_path, rules, events = shop
    state = tmp_path / "state.db"
    for address, expected in (("0.0.0.0:9108", "--allow-remote"), ("localhost", "HOST:PORT")):
        done = subprocess.run(rulecrm_run(rules(), "--state", state, "--source", f"jsonl:{events}",
                                          "--metrics", address, "--once"), capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("error: --metrics:") and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not state.exists()  # refused before anything was opened


def test_a_run_without_metrics_does_not_import_prometheus_client(shop):
    tmp_path, rules, events = shop
    events.write_text(order("o-1", "c-1", at="2026-03-01T10:00:00Z"))
    program = (
        "import sys\n"
        "from rulecrm.__main__ import main\n"
        f"sys.argv = ['rulecrm', 'run', '--rules', {str(rules())!r}, '--state', {str(tmp_path / 'state.db')!r},"
        f" '--source', 'jsonl:{events}', '--backend', 'python', '--once']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(sorted(name for name in sys.modules if name.startswith(('prometheus_client', 'rulecrm.app.metrics'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "stopped: applied 1" in done.stderr
    assert done.stdout.strip() == "[]"


def test_log_format_json_writes_every_message_as_one_json_line_masked(shop, runners):
    tmp_path, rules, events = shop
    events.write_text(order("o-1", "c-1") + bad_line("o-2"))
    port = free_port()
    runner = runners(tmp_path, rules(), "--state", tmp_path / "state.db", "--source", f"jsonl:{events}",
                     "--metrics", f"127.0.0.1:{port}", "--log-format", "json")
    assert wait_for(lambda: "rejected" in runner.stderr()), runner.stderr()
    assert runner.stop() == 0
    text = runner.stderr()
    assert PHONE not in text and "13800001234" not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON: nothing escaped the format
    for line in lines:
        assert list(line)[:3] == ["time", "level", "message"], line
        assert line["level"] in ("info", "warning", "error")
        assert line["time"].endswith("Z") and datetime.fromisoformat(line["time"][:-1]).year >= 2026
    messages = [line["message"] for line in lines]
    assert messages[0].startswith("metrics on http://127.0.0.1:")
    assert messages[1].startswith("running: rules ")
    assert messages[-1] == "stopped: applied 1, duplicates 0, rejected 1, reloads 0"
    assert lines[-1]["applied"] == 1 and lines[-1]["rejected"] == 1
    [rejected] = [line for line in lines if "rejected:" in line["message"]]
    assert rejected["level"] == "warning"
    assert rejected["source"] == f"jsonl:{events}" and rejected["line"] == 2
    assert rejected["message"].startswith(f"jsonl:{events}:2: rejected: ") and "'+***1234'" in rejected["message"]


def test_log_format_json_reports_an_error_as_a_json_line(shop):
    tmp_path, rules, _events = shop
    done = subprocess.run(rulecrm_run(rules(), "--state", tmp_path / "state.db", "--source", "kafka:topic",
                                      "--log-format", "json", "--once"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert line["level"] == "error" and line["message"].startswith("error: unknown source 'kafka'")


def test_the_text_format_is_unchanged(shop):
    tmp_path, rules, events = shop
    events.write_text(order("o-1", "c-1", at=(datetime.now(timezone.utc) - timedelta(hours=1)).isoformat())
                      + bad_line("o-2"))
    rules_dir = rules()
    done = subprocess.run(rulecrm_run(rules_dir, "--state", tmp_path / "state.db", "--source", f"jsonl:{events}",
                                      "--once"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"running: rules {rules_dir}, state {tmp_path / 'state.db'}, sources jsonl:{events}",
        f"jsonl:{events}:2: rejected: at: expected an ISO 8601 timestamp such as 2026-03-01T10:15:00+08:00, "
        "found '+***1234'",
        "stopped: applied 1, duplicates 0, rejected 1, reloads 0",
    ]
