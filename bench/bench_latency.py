"""Bench B6: event-to-action latency of `rulecrm run`, over the `http` source or Redis streams.

    python -m bench.bench_latency [--source http|redis] [--runners 1|2] [--rate 1000] [--seconds 60]
                                  [--clients 128] [--backend durable|python] [--find-max]

Real `rulecrm run` processes (the default backend unless `--backend`, a fresh state) apply the events; their one rule
notifies the customer of each order through a `jsonl` channel, and a watcher tails the channels'
files. The latency of an event is the time from its scheduled instant to its message appearing in a
file (the files are polled every 2 ms, so that is the resolution): a producer that starts
late counts its wait. Reports p50, p99 and max, the rate achieved, and failed requests. `--find-max`
then offers 10-second steps of rising rate and reports the highest one sustained: every event
delivered within the step plus a little over a second, and p99 within a second. The last two
columns are CPU time per event delivered: of the runner processes (the cost of an event, much less
noisy than the latencies on a shared machine), and of the rest that shares the machine (this
process's clients or producer and its watcher, and `redis-server`).

* `--source http`: one runner listens on 127.0.0.1; `--clients` connections (coroutines of one
  asyncio loop) post one event per request, each at its scheduled instant, kept alive. The http source answers once the
  events are committed, so a client has one request in flight at a time: offering R events/s needs
  more than R x latency clients.
* `--source redis`: the bench starts its own `redis-server` on 127.0.0.1 (Debian's package, as the
  tests use) and a state of 2 partitions. `--runners 1` runs one runner owning both shards;
  `--runners 2` one runner per shard. One producer thread XADDs each event to the stream of its
  customer's shard (as `rulecrm publish` routes it), at its scheduled instant; the events due go in
  one round trip, at most every 2 ms.

Targets (SPEC §13): p99 <= 50 ms at 1,000 events/s on this machine; 2 runners on 2 shards sustain
at least 1.7 x the highest rate of 1 runner.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rulecrm.backends import default_backend_name

TARGET_P99_SECONDS = 0.05
CUSTOMERS = 10_000
POLL = 0.002  # the watcher's look at the channel files: the latencies' resolution
BATCH_WINDOW = 0.002  # the redis producer sends at most this often (what is due by then, in one round trip)
PARTITIONS = 2  # the redis bench's state: one shard per runner with --runners 2


def process_cpu_seconds(pid: int) -> float:
    """CPU time a process used so far (user and system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def order(event_id: str, n: int, at: str) -> dict:
    return {"id": event_id, "type": "order.placed", "customer_id": f"c-{n % CUSTOMERS}", "at": at,
            "data": {"sku": "tea", "amount": 1}}


def orders(rate: float, seconds: float, prefix: str) -> list[tuple[str, float, dict]]:
    """(event id, seconds after the run's start, event) of a run, built before it starts: the
    producers' own work while the run goes on is only sending, so the bench measures the runners
    rather than itself. The offsets are relative because building takes a while: a start instant
    fixed before it would make the first events late and send them in one burst."""
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
    return [(f"{prefix}-{n}", n / rate, order(f"{prefix}-{n}", n, at)) for n in range(int(rate * seconds))]


def write_rules(directory: Path, sends: Path) -> Path:
    rules = directory / "rules"
    rules.mkdir()
    (rules / "shop.yaml").write_text(f"""shop: {{timezone: UTC}}
channels:
  out: {{type: jsonl, path: "{sends}"}}
lifecycle: {{dormant_after: 3650d, churned_after: 7300d}}
rules:
  - id: thanks
    on: order.placed
    notify: {{to: customer, channel: out, kind: service, template: "thanks {{event.id}}"}}
""", encoding="utf-8")
    return rules


class Runner:
    """`rulecrm run` in a child process writing to its own jsonl channel file, in `directory`."""

    def __init__(self, directory: Path, state: Path, source: str, *, backend: str, shards: str | None = None,
                 ready: str = "running:") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.sends = directory / "sends.jsonl"
        self.sends.touch()
        rules = write_rules(directory, self.sends)
        self.log = directory / "runner.log"
        command = [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
                   "--source", source, "--backend", backend]
        if shards is not None:
            command += ["--shards", shards]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        deadline = time.monotonic() + 60
        while ready not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the runner did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class Watcher(threading.Thread):
    """Tails the channel files: the wall-clock time each event id's message appeared."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.seen: dict[str, float] = {}
        self.stopping = False

    def run(self) -> None:
        handles = [path.open("rb") for path in self.paths]
        pending = [b""] * len(handles)
        while not self.stopping:
            idle = True
            for index, handle in enumerate(handles):
                chunk = handle.read()
                if not chunk:
                    continue
                idle = False
                now = time.time()
                *lines, pending[index] = (pending[index] + chunk).split(b"\n")
                for line in lines:  # the message's text ends with the event id: `..., "text": "... ID"}`
                    self.seen[line[line.rindex(b" ") + 1:line.rindex(b'"')].decode()] = now
            if idle:
                time.sleep(POLL)
        for handle in handles:
            handle.close()


def wait_until(due: float) -> None:
    wait = due - time.time()
    if wait > 0:
        time.sleep(wait)


class HttpLoad:
    """One runner with the http source; `clients` connections post one event per request.

    The clients are coroutines on one asyncio loop, writing HTTP/1.1 by hand on kept-alive
    connections: a thread and `http.client` per client cost the bench more CPU than the runner it
    measures shares the machine with."""

    def __init__(self, work: Path, clients: int, backend: str) -> None:
        port = free_port()
        self.host, self.port = "127.0.0.1", port
        self.clients = clients
        self.runners = [Runner(work / "runner", work / "state.db", f"http:127.0.0.1:{port}", backend=backend,
                               ready="listening on")]

    def prepare(self, rate: float, seconds: float, prefix: str) -> list[tuple[str, float, bytes]]:
        planned = []
        for event_id, offset, event in orders(rate, seconds, prefix):
            body = json.dumps(event).encode()
            request = (b"POST /events HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-ndjson\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (self.host.encode(), len(body), body))
            planned.append((event_id, offset, request))
        return planned

    def offer(self, planned, begin: float) -> tuple[dict[str, float], int]:
        return asyncio.run(self._offer([(event_id, begin + offset, request) for event_id, offset, request in planned]))

    async def _offer(self, planned) -> tuple[dict[str, float], int]:
        plan = iter(planned)
        started: dict[str, float] = {}
        failures = 0

        async def client() -> None:
            nonlocal failures
            connection = None  # kept alive between requests, as a producer posting all day would
            for event_id, due, request in plan:
                wait = due - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                # measured from the scheduled instant, not the actual start: a client held up by slow
                # answers would otherwise hide the wait (coordinated omission)
                started[event_id] = due
                try:
                    if connection is None:
                        connection = await asyncio.open_connection(self.host, self.port)
                    reader, writer = connection
                    writer.write(request)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                    await reader.readexactly(length)
                    if head[9:12] != b"202" or b"connection: close" in head.lower():
                        raise OSError(f"answered {head[9:12].decode()}")
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, IndexError, ValueError):
                    failures += 1
                    if connection is not None:
                        connection[1].close()
                    connection = None
            if connection is not None:
                connection[1].close()

        await asyncio.gather(*(client() for _ in range(self.clients)))
        return started, failures

    def rest_cpu_seconds(self) -> float:
        """CPU time of everything but the runners: this process (clients and watcher)."""
        return time.process_time()

    def close(self) -> None:
        for runner in self.runners:
            runner.stop()


class RawReplies:
    """The producer's connection to redis-server: packed commands out, their replies counted, not parsed.

    redis-py turns each reply into a Python object, which cost the bench about 15 µs an event at
    thousands of events a second, CPU the runners it measures could not use. An XADD answers with a
    bulk string (`$<length>`, the entry id) or an error line (`-ERR ...`); only errors are counted."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.socket = socket.create_connection(address)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, packed: bytes, replies: int) -> int:
        """Send the commands and wait for their `replies`; returns how many were errors."""
        self.socket.sendall(packed)
        errors, data, position = 0, self.buffer, 0
        while replies:
            end = data.find(b"\r\n", position)
            if end < 0 or (data[position:position + 1] == b"$" and len(data) < end + 4 + int(data[position + 1:end])):
                chunk = self.socket.recv(65536)
                if not chunk:
                    raise OSError("redis-server closed the connection")
                data, position = data[position:] + chunk, 0
                continue
            if data[position:position + 1] == b"$":
                position = end + 2 + int(data[position + 1:end]) + 2
            else:
                errors += data[position:position + 1] == b"-"
                position = end + 2
            replies -= 1
        self.buffer = data[position:]
        return errors

    def __enter__(self) -> RawReplies:
        return self

    def __exit__(self, *exc_info) -> None:
        self.socket.close()


class RedisLoad:
    """A redis-server, a state of 2 partitions, `runners` runners; one producer XADDs each event."""

    def __init__(self, work: Path, runners: int, backend: str) -> None:
        import redis
        from rulecrm_redis.source import FIELD

        from rulecrm.state.partitioned import PartitionedState, shard_of

        binary = os.environ.get("RULECRM_REDIS_SERVER") or shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: `make servers` installs Debian's package")
        port = free_port()
        self.server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                        "--appendonly", "no", "--dir", str(work)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        self.address = ("127.0.0.1", port)
        self.client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        state = work / "state"
        PartitionedState.create(state, PARTITIONS)
        self.shard_of, self.field = shard_of, FIELD
        groups = [f"0-{PARTITIONS - 1}"] if runners == 1 else [str(shard) for shard in range(PARTITIONS)]
        self.runners = [Runner(work / f"runner-{index}", state, f"redis:{url}", backend=backend, shards=shards)
                        for index, shards in enumerate(groups)]

    def prepare(self, rate: float, seconds: float, prefix: str) -> list[tuple[str, float, list[bytes]]]:
        # each XADD packed before the run: while it goes on the producer only writes bytes and counts
        # the replies, so the machine's CPU goes to the runners being measured
        connection = self.client.connection_pool.get_connection()
        try:
            return [(event_id, offset, b"".join(connection.pack_command(
                        "XADD", f"rulecrm:events:{self.shard_of(event['customer_id'], PARTITIONS)}", "*",
                        self.field, json.dumps(event).encode())))
                    for event_id, offset, event in orders(rate, seconds, prefix)]
        finally:
            self.client.connection_pool.release(connection)

    def offer(self, planned, begin: float) -> tuple[dict[str, float], int]:
        started: dict[str, float] = {}
        failures = 0
        plan = [(event_id, begin + offset, command) for event_id, offset, command in planned]
        index = 0
        last_send = 0.0
        with RawReplies(self.address) as producer:
            while index < len(plan):
                # the events due by now go in one round trip, at most every BATCH_WINDOW: a producer
                # of thousands of events a second batches them, as `rulecrm publish` does; each event
                # is still measured from its own scheduled instant, so the batching's wait counts
                wait_until(max(plan[index][1], last_send + BATCH_WINDOW))
                now = last_send = time.time()
                packed: list[bytes] = []
                while index < len(plan) and plan[index][1] <= now:
                    event_id, due, command = plan[index]
                    started[event_id] = due
                    packed.append(command)
                    index += 1
                try:
                    failures += producer.send(b"".join(packed), len(packed))
                except OSError:
                    failures += len(packed)
        return started, failures

    def rest_cpu_seconds(self) -> float:
        """CPU time of everything but the runners: this process (producer and watcher) and redis-server."""
        return time.process_time() + process_cpu_seconds(self.server.pid)

    def close(self) -> None:
        for runner in self.runners:
            runner.stop()
        self.client.close()
        self.server.terminate()
        self.server.wait(timeout=30)


def measure(load, watcher: Watcher, rate: float, seconds: float, prefix: str) -> dict:
    planned = load.prepare(rate, seconds, prefix)  # before the clocks start: the bench's own set-up
    cpu_before = sum(runner.cpu_seconds() for runner in load.runners)
    rest_before = load.rest_cpu_seconds()
    began = time.time() + 0.05
    started, failures = load.offer(planned, began)
    deadline = time.time() + 5
    waiting = [event_id for event_id in started if event_id not in watcher.seen]
    while waiting and time.time() < deadline:
        time.sleep(0.01)
        waiting = [event_id for event_id in waiting if event_id not in watcher.seen]
    cpu = sum(runner.cpu_seconds() for runner in load.runners) - cpu_before
    rest = load.rest_cpu_seconds() - rest_before
    latencies = sorted(watcher.seen[e] - t for e, t in started.items() if e in watcher.seen)
    delivered_by = max((watcher.seen[e] for e in started if e in watcher.seen), default=began)
    return {
        "rate": rate, "offered": len(started), "delivered": len(latencies), "failures": failures,
        "p50": _quantile(latencies, 0.50), "p99": _quantile(latencies, 0.99),
        "max": latencies[-1] if latencies else None,
        "achieved": len(latencies) / max(delivered_by - began, 1e-9),
        "cpu_per_event": cpu / max(len(latencies), 1),
        "rest_per_event": rest / max(len(latencies), 1),
        "sustained": len(latencies) == len(started) and failures == 0 and delivered_by - began <= seconds + 1.2
        and _quantile(latencies, 0.99) <= 1.0,
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("inf")
    return values[min(len(values) - 1, int(q * len(values)))]


def _row(result: dict) -> str:
    ms = lambda seconds: f"{seconds * 1000:,.1f}"  # noqa: E731
    return (f"| {result['rate']:,.0f} | {result['offered']:,} | {result['delivered']:,} | {result['failures']} | "
            f"{ms(result['p50'])} | {ms(result['p99'])} | {ms(result['max'])} | {result['achieved']:,.0f} | "
            f"{result['cpu_per_event'] * 1e6:,.0f} | {result['rest_per_event'] * 1e6:,.0f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("http", "redis"), default="http")
    parser.add_argument("--runners", type=int, choices=(1, 2), default=1, help="with --source redis")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second offered")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=128, help="with --source http")
    parser.add_argument("--backend", choices=("durable", "python"), default=default_backend_name(),
                        help="the runners' matching backend (default: rulecrm's default)")
    parser.add_argument("--find-max", action="store_true", help="also find the highest sustained rate")
    parser.add_argument("--start", type=float, default=500.0, help="--find-max's first rate")
    parser.add_argument("--step", type=float, default=250.0, help="--find-max's rise per step")
    args = parser.parse_args(argv)
    if args.runners == 2 and args.source != "redis":
        parser.error("--runners 2 needs --source redis")
    how = (f"{args.clients} clients, one event per request" if args.source == "http" else
           f"{args.runners} runner(s) on {PARTITIONS} shards, one producer")
    print(f"B6: rulecrm run --backend {args.backend}, {args.source} source on 127.0.0.1, jsonl channel; {how}; "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| offered/s | events | delivered | failed requests | p50 ms | p99 ms | max ms | delivered/s "
          "| runners' CPU µs per event | the rest's CPU µs per event |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="rulecrm-bench-latency-") as work:
        load = (HttpLoad(Path(work), args.clients, args.backend) if args.source == "http"
                else RedisLoad(Path(work), args.runners, args.backend))
        watcher = Watcher([runner.sends for runner in load.runners])
        watcher.start()
        try:
            main_result = measure(load, watcher, args.rate, args.seconds, "main")
            print(_row(main_result), flush=True)
            best = None
            if args.find_max:
                for step, rate in enumerate(itertools.count(args.start, args.step)):
                    result = measure(load, watcher, rate, 10, f"step{step}")
                    print(_row(result), flush=True)
                    if not result["sustained"]:
                        break
                    best = rate
        finally:
            watcher.stopping = True
            load.close()
    met = main_result["p99"] <= TARGET_P99_SECONDS and main_result["delivered"] == main_result["offered"]
    verdict = "pass" if met else "FAIL"
    print(f"\nB6: {verdict}: p99 {main_result['p99'] * 1000:.1f} ms at {args.rate:,.0f} events/s "
          f"(target <= {TARGET_P99_SECONDS * 1000:.0f} ms)")
    if args.find_max:
        print(f"highest sustained rate (10 s steps of +{args.step:g}/s from {args.start:g}): "
              f"{best if best is not None else f'below {args.start:g}'} events/s")
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
