"""Bench B1: replay of all of CDNOW with rules/cdnow: the hand-written loop vs rulecrm (python and durable backends)."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "cdnow" / "cdnow.yaml"
CDNOW = Path(os.environ.get("RULECRM_DATA", ROOT / "tests" / "data")) / "cdnow" / "CDNOW_master.txt"
WORK = Path(tempfile.gettempdir()) / "rulecrm-bench"
CONTENDERS = ("handwritten", "python", "durable")
SLOW = 60.0  # seconds: a contender slower than this is measured once, not best of N


def converted_cdnow() -> Path:
    """The CDNOW events JSONL, converted once and cached (keyed by the source's size and mtime)."""
    from bench.datasets import cdnow_events

    stat = CDNOW.stat()
    path = WORK / f"cdnow-{stat.st_size}-{int(stat.st_mtime)}.jsonl"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        cdnow_events(CDNOW, partial)
        partial.replace(path)
    return path


def run_one(contender: str, events_path, out_path) -> dict:
    """One measured run in this process: seconds, events and this process's peak RSS."""
    with open(out_path, "w", encoding="utf-8") as out:
        started = time.perf_counter()
        if contender == "handwritten":
            from bench.handwritten import run

            events = run(events_path, out)["events"]
        else:
            from rulecrm.app.replay import replay

            events = replay(RULES, events_path, out=out, backend_name=contender).events
        seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"contender": contender, "seconds": seconds, "events": events, "peak_rss_mb": peak_kb / 1024}


def measure(contender: str, events_path, out_path) -> dict:
    """run_one in a fresh Python process."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.bench_replay", "--one", contender,
         "--events", str(events_path), "--out", str(out_path)],
        cwd=ROOT, capture_output=True, text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{contender} run failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def action_set(path) -> list[tuple]:
    """The comparable part of every action: sorted (key, status, due_at, sent_at, reason, message)."""
    with open(path, encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    return sorted(
        (a["key"], a["status"], a["due_at"], a["sent_at"] or "", a["reason"] or "", a["message"] or "") for a in rows
    )


def run(events_path=None, repeat: int = 3, contenders=CONTENDERS) -> dict:
    """Best-of-`repeat` runs of each contender in fresh processes; compares their actions."""
    events_path = events_path or converted_cdnow()
    results, actions = {}, {}
    for contender in contenders:
        out_path = WORK / f"actions-{contender}.jsonl"
        runs = [measure(contender, events_path, out_path)]
        while len(runs) < repeat and runs[0]["seconds"] < SLOW:
            runs.append(measure(contender, events_path, out_path))
        best = min(runs, key=lambda r: r["seconds"])
        best["runs"] = len(runs)
        best["per_s"] = best["events"] / best["seconds"]
        actions[contender] = action_set(out_path)
        results[contender] = best
    baseline = contenders[0]
    for contender, row in results.items():
        row["identical"] = actions[contender] == actions[baseline]
        row["ratio"] = row["per_s"] / results[baseline]["per_s"]
        row["action_count"] = len(actions[contender])
    return {"events_path": str(events_path), "results": results}


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.events, args.out)))
        return None
    report = run(repeat=args.repeat)
    print(f"B1: replay of CDNOW ({report['events_path']}), rules {RULES.relative_to(ROOT)}")
    for name, row in report["results"].items():
        print(
            f"  {name:12} {row['per_s']:>9,.0f} events/s  {row['seconds']:6.2f}s (best of {row['runs']})"
            f"  x{row['ratio']:.2f} of hand-written  peak RSS {row['peak_rss_mb']:.0f} MB"
            f"  {row['action_count']} actions, identical: {row['identical']}"
        )
    if not all(row["identical"] for row in report["results"].values()):
        sys.exit("B1: the hand-written loop and rulecrm gave different actions")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
