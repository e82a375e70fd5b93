"""Bench B4: a partitioned replay on a local Dask cluster, 2 worker processes against 1.

    python -m bench.bench_dask [--customers 100000] [--partitions 2] [--backend python] [--seed 1]

The input is the synthetic shop of bench/synthetic_shop.py (cached like bench/bench_scale.py's),
replayed by `rulecrm` in child processes, one after another:

* `rulecrm replay` in one process, no partitions: the reference actions;
* `rulecrm replay --partitions P --workers 1`: the same tasks on a cluster of one worker process;
* `rulecrm replay --partitions P --workers 2`: on two worker processes.

Each time is the child's wall clock, cluster start and stop included. B4 is time(1 worker) /
time(2 workers) >= 1.7 with identical actions: both partitioned outputs must be byte for byte the
same, and equal to the reference stably sorted by customer id (the documented order of a partitioned
`--out`, docs/running.md). The exit status is 1 when the actions differ or the target is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_scale import RULES, rulecrm_command, shop_events

B4_RATIO = 1.7


def timed_replay(events: Path, out: Path, *, backend: str, extra: list[str]) -> float:
    """Wall seconds of one `rulecrm replay` child writing its actions to `out`."""
    command = [*rulecrm_command(), "replay", "--rules", str(RULES), "--events", str(events), "--out", str(out),
               "--backend", backend, "--no-progress", *extra]
    started = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode not in (0, 3):  # 3: some lines rejected, which the comparison still covers
        raise RuntimeError(f"{' '.join(command)} exited with {finished.returncode}:\n{finished.stderr[-2000:]}")
    return seconds


def by_customer(path: Path) -> list[str]:
    """The lines of a single replay's --out, stably sorted by customer id (a partitioned --out's order)."""
    with open(path, encoding="utf-8") as lines:
        records = [(json.loads(line)["customer_id"], line) for line in lines]
    records.sort(key=lambda record: record[0])
    return [line for _customer, line in records]


def run(customers: int, *, partitions: int, backend: str, seed: int, scratch: Path) -> dict:
    events = shop_events(customers, 5.0, seed)
    results = {}
    for label, extra in (("single process", []),
                         ("1 worker", ["--partitions", str(partitions), "--workers", "1"]),
                         ("2 workers", ["--partitions", str(partitions), "--workers", "2"])):
        out = scratch / f"{label.replace(' ', '-')}.jsonl"
        print(f"replaying {customers:,} customers: {label} ...", file=sys.stderr, flush=True)
        results[label] = {"seconds": timed_replay(events, out, backend=backend, extra=extra), "out": out}
    one, two = (results[label]["out"].read_bytes() for label in ("1 worker", "2 workers"))
    reference = "".join(by_customer(results["single process"]["out"])).encode()
    with open(events, "rb") as lines:
        event_count = sum(1 for _ in lines)
    return {
        "customers": customers,
        "events": event_count,
        "partitions": partitions,
        "actions": one.count(b"\n"),
        "seconds": {label: result["seconds"] for label, result in results.items()},
        "identical": one == two == reference,
        "ratio": results["1 worker"]["seconds"] / results["2 workers"]["seconds"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dask", description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--backend", choices=["python", "durable"], default="python")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rulecrm-b4-") as scratch:
        result = run(args.customers, partitions=args.partitions, backend=args.backend, seed=args.seed,
                     scratch=Path(scratch))
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average {load}\n")
    print(f"B4: {result['events']:,} events of {result['customers']:,} synthetic customers, "
          f"{result['partitions']} partitions, backend {args.backend}, {result['actions']:,} actions.\n")
    print("| replay | seconds |")
    print("| --- | ---: |")
    for label, seconds in result["seconds"].items():
        print(f"| {label} | {seconds:.1f} |")
    passed = result["identical"] and result["ratio"] >= B4_RATIO
    print(f"\nB4: {'pass' if passed else 'FAIL'}: 2 workers are {result['ratio']:.2f}x as fast as 1 worker "
          f"(target >= {B4_RATIO}x); identical actions: {'yes' if result['identical'] else 'NO'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
