"""Benches B3 and B8: memory and throughput of `rulecrm replay` as the shop grows.

    python -m bench.bench_scale [--sizes 10000,100000,1000000,3000000] [--events-per-customer 5]
        [--backend python] [--seed 1] [--with-state] [--customers-per-partition K] [--keep] [--json FILE]

For each size, bench/synthetic_shop.py writes a shop of that many customers (cached in
$TMPDIR/rulecrm-bench/ by size, events per customer, seed and the generator's own text, so reruns
are cheap), and `rulecrm replay --rules bench/synthetic-shop --events FILE --out /dev/null` replays
it in a child process; with --with-state a second run keeps its state in a SQLite file. With
`--customers-per-partition K`, each size of more than K customers is also replayed as
`rulecrm replay --partitions N` in the command's own process (no Dask), N = ceil(customers / K): the
way docs/running.md recommends for a shop that outgrows one profile cache. Its targets are judged
against the smaller sizes' plain replay (a shop that fits one cache gains nothing from partitions).
`--keep` keeps those state files and the replays' stderr (their directory is printed).

Peak RSS is the child's own `ru_maxrss` as `os.wait4` returns it for that one process: exact and
free of polling. `getrusage(RUSAGE_CHILDREN)` would give the largest child so far, hiding a smaller
size run after a larger one; polling /proc/PID/status misses whatever the child allocates between the
last poll and its exit; psutil is not a dependency (and polls too).

Targets: B3, at most 1 KB of RSS per customer at 1M customers (the whole process's peak divided
by the customers: interpreter and rules included), and RSS at 3M at most 1.2 x RSS at 1M; B8,
events/s at 1M at least 0.7 x events/s at 10k, judged per CPU second of the child (`os.wait4`'s
user + system time), since on a shared machine the wall clock measures the neighbours too; the wall
clock's ratio is printed beside it. A target is judged when its sizes were run; the exit
status is 1 when one fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import synthetic_shop

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "bench" / "synthetic-shop"
WORK = Path(tempfile.gettempdir()) / "rulecrm-bench"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000, 3_000_000)
SUMMARY = re.compile(r"replayed (\d+) events in ([0-9.]+)s")

B3_SIZE, B3_BYTES_PER_CUSTOMER = 1_000_000, 1024
B3_LARGER, B3_GROWTH = 3_000_000, 1.2
B8_SMALL, B8_LARGE, B8_RATIO = 10_000, 1_000_000, 0.7
PARTITIONED = "none, partitioned"  # the state label of the `--customers-per-partition` replays


def shop_events(customers: int, events_per_customer: float, seed: int) -> Path:
    """The synthetic shop's events file, generated once per size, events per customer, seed and generator text."""
    generator = hashlib.sha256(Path(synthetic_shop.__file__).read_bytes()).hexdigest()[:10]
    path = WORK / f"synthetic-shop-{customers}c-{events_per_customer:g}e-seed{seed}-{generator}.jsonl"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        started = time.perf_counter()
        count = synthetic_shop.generate(customers, partial, seed=seed, events_per_customer=events_per_customer)
        seconds = time.perf_counter() - started
        partial.replace(path)
        print(f"generated {count:,} events of {customers:,} customers in {seconds:.1f}s "
              f"({count / seconds:,.0f} events/s): {path}", file=sys.stderr)
    return path


def rulecrm_command() -> list[str]:
    """The `rulecrm` script of this interpreter's environment, else the same program as a module."""
    script = Path(sys.executable).with_name("rulecrm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rulecrm"]


def measure_replay(events: Path, *, backend: str, state: Path | None, log: Path, partitions: int | None = None) -> dict:
    """One `rulecrm replay` in a child process: wall seconds, the replay's own seconds and events, peak RSS."""
    command = [*rulecrm_command(), "replay", "--rules", str(RULES), "--events", str(events),
               "--out", os.devnull, "--backend", backend]
    if state is not None:
        command += ["--state", str(state)]
    if partitions is not None:
        command += ["--partitions", str(partitions)]
    with open(log, "wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, see the module's docstring
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    text = log.read_text(encoding="utf-8", errors="replace")
    if child.returncode != 0:
        raise RuntimeError(f"replay of {events} exited with {child.returncode}:\n{text[-2000:]}")
    summary = SUMMARY.search(text)
    seconds = float(summary.group(2)) if summary else wall
    events_count = int(summary.group(1)) if summary else _count_lines(events)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "events": events_count,
        "seconds": seconds,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "events_per_s": events_count / seconds if seconds else 0.0,
        "events_per_cpu_s": events_count / cpu if cpu else 0.0,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # kilobytes on Linux
        "summary": text.strip().splitlines()[-3:],
    }


def _count_lines(path: Path) -> int:
    with open(path, "rb") as lines:
        return sum(1 for _ in lines)


def run(sizes, *, events_per_customer: float, backend: str, seed: int, with_state: bool, scratch: Path,
        customers_per_partition: int | None = None) -> list[dict]:
    """Every size replayed without state (and with, and in partitions, if asked), smallest first."""
    rows = []
    for customers in sorted(sizes):
        events = shop_events(customers, events_per_customer, seed)
        variants = [("none", None, None)]
        if with_state:
            variants.append(("sqlite", scratch / f"state-{customers}.db", None))
        if customers_per_partition and customers > customers_per_partition:
            variants.append((PARTITIONED, None, -(-customers // customers_per_partition)))
        for label, state, partitions in variants:
            print(f"replaying {customers:,} customers (state: {label}) ...", file=sys.stderr, flush=True)
            log = scratch / f"replay-{customers}-{label}.log"
            result = measure_replay(events, backend=backend, state=state, log=log, partitions=partitions)
            result.update(customers=customers, state=label, partitions=partitions,
                          rss_bytes_per_customer=result["peak_rss_bytes"] / customers)
            rows.append(result)
    return rows


def verdicts(rows: list[dict]) -> list[dict]:
    """B3 and B8 for each state variant whose sizes were run."""
    found = []
    for state in sorted({row["state"] for row in rows}):
        by_size = {row["customers"]: row for row in rows if row["state"] == state}
        if state == PARTITIONED:  # a size that fits one cache is replayed as it is
            by_size = {row["customers"]: row for row in rows if row["state"] == "none"} | by_size
        if B3_SIZE in by_size:
            per_customer = by_size[B3_SIZE]["rss_bytes_per_customer"]
            found.append(_verdict("B3", state, per_customer <= B3_BYTES_PER_CUSTOMER,
                                  f"{per_customer:,.0f} bytes of RSS per customer at {B3_SIZE:,} "
                                  f"(target <= {B3_BYTES_PER_CUSTOMER:,})"))
        if B3_SIZE in by_size and B3_LARGER in by_size:
            growth = by_size[B3_LARGER]["peak_rss_bytes"] / by_size[B3_SIZE]["peak_rss_bytes"]
            found.append(_verdict("B3", state, growth <= B3_GROWTH,
                                  f"RSS at {B3_LARGER:,} is {growth:.2f}x RSS at {B3_SIZE:,} (target <= {B3_GROWTH}x)"))
        if B8_SMALL in by_size and B8_LARGE in by_size:
            # judged per CPU second: on a shared machine the wall clock also measures the neighbours
            ratio = by_size[B8_LARGE]["events_per_cpu_s"] / by_size[B8_SMALL]["events_per_cpu_s"]
            wall_ratio = by_size[B8_LARGE]["events_per_s"] / by_size[B8_SMALL]["events_per_s"]
            found.append(_verdict("B8", state, ratio >= B8_RATIO,
                                  f"events per CPU second at {B8_LARGE:,} are {ratio:.2f}x those at {B8_SMALL:,} "
                                  f"(target >= {B8_RATIO}x; by the wall clock {wall_ratio:.2f}x)"))
    return found


def _verdict(target: str, state: str, passed: bool, text: str) -> dict:
    return {"target": target, "state": state, "passed": passed, "text": text}


def machine() -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}, load average {load}"


def print_report(rows: list[dict], judged: list[dict], *, backend: str, events_per_customer: float) -> None:
    print(f"Machine: {machine()}\n")
    print(f"B3/B8: rulecrm replay --rules bench/synthetic-shop --backend {backend} --out /dev/null, "
          f"synthetic shops of ~{events_per_customer:g} events per customer.\n")
    print("| customers | state | partitions | events | seconds | events/s | CPU seconds | events per CPU s "
          "| peak RSS MB | RSS bytes per customer |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['customers']:,} | {row['state']} | {row.get('partitions') or ''} | {row['events']:,} | "
              f"{row['seconds']:.1f} | {row['events_per_s']:,.0f} | {row['cpu_seconds']:.1f} | "
              f"{row['events_per_cpu_s']:,.0f} | {row['peak_rss_bytes'] / 2**20:,.0f} | "
              f"{row['rss_bytes_per_customer']:,.0f} |")
    print()
    for verdict in judged:
        print(f"{verdict['target']} ({verdict['state']} state): {'pass' if verdict['passed'] else 'FAIL'}: "
              f"{verdict['text']}")
    targets = {verdict["target"] for verdict in judged}
    for target, sizes in (("B3", f"{B3_SIZE:,} (and {B3_LARGER:,})"), ("B8", f"{B8_SMALL:,} and {B8_LARGE:,}")):
        if target not in targets:
            print(f"{target}: not judged (needs the sizes {sizes})")


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("expected customer counts such as 10000,100000")
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                        help="customer counts, comma-separated (default 10000,100000,1000000,3000000)")
    parser.add_argument("--events-per-customer", type=float, default=5.0)
    parser.add_argument("--backend", choices=["python", "durable"], default="python")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--with-state", action="store_true", help="also replay each size with --state (SQLite)")
    parser.add_argument("--customers-per-partition", type=int, metavar="K",
                        help="also replay each size of more than K customers with --partitions ceil(customers / K)")
    parser.add_argument("--keep", action="store_true", help="keep the state files and the replays' stderr")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="rulecrm-scale-"))
    try:
        rows = run(args.sizes, events_per_customer=args.events_per_customer, backend=args.backend, seed=args.seed,
                   with_state=args.with_state, scratch=scratch, customers_per_partition=args.customers_per_partition)
    finally:
        if args.keep:
            print(f"state files and replay logs kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch)
    judged = verdicts(rows)
    print_report(rows, judged, backend=args.backend, events_per_customer=args.events_per_customer)
    if args.json:
        report = {"machine": machine(), "rules": str(RULES.relative_to(ROOT)), "backend": args.backend,
                  "events_per_customer": args.events_per_customer, "seed": args.seed, "runs": rows,
                  "verdicts": judged}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if all(verdict["passed"] for verdict in judged) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
