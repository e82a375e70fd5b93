"""Runs benches B1 and B2 and prints their results as a markdown table (`python -m bench.run_all`)."""
from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import version

from bench import bench_backends, bench_replay


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, durable-rules {version('durable-rules')}, "
        f"{platform.platform()}"
    )


def main() -> int:
    b1 = bench_replay.run()
    b2 = bench_backends.run()
    rows = []
    for name, row in b1["results"].items():
        if name == "handwritten":
            label, note = "hand-written loop", "baseline"
        else:
            same = "yes" if row["identical"] else "NO"
            label = f"rulecrm replay, backend {name}"
            note = f"{row['ratio']:.2f}× hand-written; identical actions: {same}"
        note += f"; {row['action_count']:,} actions; peak RSS {row['peak_rss_mb']:.0f} MB"
        rows.append(("B1", label, f"{row['per_s']:,.0f}", f"{row['seconds']:.2f} (best of {row['runs']})", note))
    for name, row in b2["results"].items():
        note = f"{b2['durable_over_raw']:.2f}× raw's time" if name == "durable backend" else ""
        seconds = f"{row['seconds']:.2f} (best of {b2['repeat']})"
        rows.append(("B2", f"match, {name}", f"{row['per_s']:,.0f}", seconds, note))
    print(f"Machine: {machine()}\n")
    print(f"B1: {next(iter(b1['results'].values()))['events']:,} CDNOW orders, rules/cdnow/cdnow.yaml. "
          f"B2: the order.placed rules matched against the same {b2['events']:,} events.\n")
    print("| bench | what | events/s | seconds | notes |")
    print("| --- | --- | ---: | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    b1_rulecrm = min(row["ratio"] for name, row in b1["results"].items() if name != "handwritten")
    print(f"\nTargets: B1 ≥ 0.50× the hand-written loop (lowest backend: {b1_rulecrm:.2f}×); "
          f"B2 durable backend ≤ 2× raw durable-rules' time ({b2['durable_over_raw']:.2f}×).")
    return 0 if all(row["identical"] for row in b1["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
