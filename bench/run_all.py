"""Runs benches B1, B2 and B5 and prints their results as a markdown table (`python -m bench.run_all`).

Exits 1 when two contenders' actions differ; the targets' verdicts are printed below the table.
"""
from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import version

from bench import bench_backends, bench_check, bench_replay

# SPEC §13, per backend: replay time as a fraction of the hand-written loop's speed
B1_TARGETS = {"python": 0.6, "durable": 0.35}


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, durable-rules {version('durable-rules')}, "
        f"{platform.platform()}"
    )


def main() -> int:
    b1 = bench_replay.run()
    b2 = bench_backends.run()
    b5 = bench_check.run(1000, 7, None)
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
        note = {
            "durable backend": f"{b2['remembering_over_raw']:.2f}× raw's time (a known fact class: no round trip)",
            bench_backends.ROUND_TRIPS: f"{b2['durable_over_raw']:.2f}× raw's time",
        }.get(name, "")
        seconds = f"{row['seconds']:.2f} (best of {b2['repeat']})"
        rows.append(("B2", f"match, {name}", f"{row['per_s']:,.0f}", seconds, note))
    print(f"Machine: {machine()}\n")
    print(f"B1: {next(iter(b1['results'].values()))['events']:,} CDNOW orders, rules/cdnow/cdnow.yaml. "
          f"B2: the order.placed rules matched against the same {b2['events']:,} events.\n")
    rows.append(("B5", f"`rulecrm check` of {b5['rules']:,} rules, a fresh process", "",
                 f"{b5['median']:.3f} (median of {b5['runs']})",
                 f"min {b5['min']:.3f}, max {b5['max']:.3f}; bare interpreter start {b5['python_start']:.3f} s"))
    print("| bench | what | events/s | seconds | notes |")
    print("| --- | --- | ---: | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for name, target in B1_TARGETS.items():
        ratio = b1["results"][name]["ratio"]
        print(f"B1 {name}: {ratio:.2f}× the hand-written loop, target ≥ {target}×: {_verdict(ratio >= target)}")
    print(f"B2: the durable backend, every fact a round trip, takes {b2['durable_over_raw']:.2f}× raw durable-rules' "
          "time, target ≤ 2×: "
          f"{_verdict(b2['durable_over_raw'] <= 2)}")
    print(f"B5: median {b5['median']:.3f} s, target ≤ {bench_check.TARGET_SECONDS} s: "
          f"{_verdict(b5['median'] <= bench_check.TARGET_SECONDS)}")
    return 0 if all(row["identical"] for row in b1["results"].values()) else 1


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
