"""Bench B7: 1,000 actions to a webhook that answers after 100 ms are all delivered in at most 15 s.

    python -m bench.bench_delivery [--actions 1000] [--delay 0.1] [--concurrency N] [--sequential]

An HTTP endpoint on 127.0.0.1 (the standard library's threading server) answers each POST after
`--delay` seconds and records when each one arrived. A rule file declares one `webhook` channel to
it and a rule that notifies each customer of an order; the events are one order for each of
`--actions` customers. `rulecrm replay --dispatch --state S` runs in a child process, exactly as a
user runs it, and is timed from start to exit by the wall clock: interpreter start, applying the
events and every delivery. Every action must end `sent`, each key received once.

`--sequential` also runs the same with `concurrency: 1` (one send at a time, as before concurrent
delivery) for comparison; it takes `actions x delay` seconds at least. Exits 1 when the concurrent
run misses the target.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TARGET_SECONDS = 15.0


class SlowEndpoint:
    """Answers every POST after `delay` seconds; keeps the keys received and the most requests at once."""

    def __init__(self, delay: float) -> None:
        self.keys: list[str] = []
        self.most_at_once = 0
        self._at_once = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint._lock:
                    endpoint._at_once += 1
                    endpoint.most_at_once = max(endpoint.most_at_once, endpoint._at_once)
                time.sleep(delay)
                with endpoint._lock:
                    endpoint._at_once -= 1
                    endpoint.keys.append(body["key"])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def write_shop(directory: Path, url: str, actions: int, concurrency: int | None) -> tuple[Path, Path]:
    rules = directory / "rules"
    rules.mkdir()
    setting = f", concurrency: {concurrency}" if concurrency else ""
    (rules / "shop.yaml").write_text(f"""shop: {{timezone: UTC}}
channels:
  hook: {{type: webhook, url: "{url}", timeout: 30{setting}}}
rules:
  - id: thanks
    on: order.placed
    notify: {{to: customer, channel: hook, kind: service, template: "thanks for order {{event.id}}"}}
""", encoding="utf-8")
    events = directory / "events.jsonl"
    with events.open("w", encoding="utf-8") as handle:
        for n in range(actions):
            at = f"2026-03-01T{10 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
            handle.write(json.dumps({"id": f"o-{n}", "type": "order.placed", "customer_id": f"c-{n}", "at": at,
                                     "data": {"sku": "tea", "amount": 1}}) + "\n")
    return rules, events


def run_once(actions: int, delay: float, concurrency: int | None) -> dict:
    endpoint = SlowEndpoint(delay)
    try:
        with tempfile.TemporaryDirectory(prefix="rulecrm-bench-delivery-") as work:
            directory = Path(work)
            rules, events = write_shop(directory, endpoint.url, actions, concurrency)
            state = directory / "state.db"
            command = [sys.executable, "-m", "rulecrm", "replay", "--rules", str(rules), "--events", str(events),
                       "--state", str(state), "--dispatch", "--out", str(directory / "out.jsonl")]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"replay --dispatch failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
            with sqlite3.connect(state) as db:
                statuses = Counter(s for (s,) in db.execute("SELECT status FROM actions WHERE rule = 'thanks'"))
    finally:
        endpoint.close()
    received = Counter(endpoint.keys)
    if statuses != {"sent": actions} or len(received) != actions or max(received.values()) != 1:
        raise SystemExit(f"not every action was delivered once: statuses {dict(statuses)}, "
                         f"{len(received)} keys received, most {max(received.values(), default=0)} times")
    return {"seconds": seconds, "most_at_once": endpoint.most_at_once}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the endpoint takes to answer")
    parser.add_argument("--concurrency", type=int, default=None, help="the channel's setting (default: rulecrm's)")
    parser.add_argument("--sequential", action="store_true", help="also run with concurrency 1, for comparison")
    args = parser.parse_args(argv)

    runs = [("concurrent", args.concurrency)] + ([("one at a time", 1)] if args.sequential else [])
    print(f"B7: rulecrm replay --dispatch, {args.actions:,} actions to a webhook answering after "
          f"{args.delay * 1000:.0f} ms\n")
    print("| delivery | concurrency | seconds (whole command) | actions/s | most requests at once |")
    print("| --- | ---: | ---: | ---: | ---: |")
    results = {}
    for label, concurrency in runs:
        result = results[label] = run_once(args.actions, args.delay, concurrency)
        print(f"| {label} | {concurrency or 'default'} | {result['seconds']:.1f} | "
              f"{args.actions / result['seconds']:,.0f} | {result['most_at_once']} |")
    seconds = results["concurrent"]["seconds"]
    verdict = "pass" if seconds <= TARGET_SECONDS else "FAIL"
    print(f"\nB7: {verdict}: {args.actions:,} actions delivered in {seconds:.1f} s (target <= {TARGET_SECONDS:g} s)")
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
