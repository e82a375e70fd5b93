"""Machine instructions per CDNOW event of a replay, counted by valgrind: a steady measure for A/B comparisons.

On a shared machine the time of one replay varies by 10–20% from run to run, more than most single
changes gain, so a change's effect on B1 cannot be read off a few timed runs. The number of machine
instructions executed barely varies (0.1% with `PYTHONHASHSEED` fixed). This bench counts them with
valgrind's cachegrind for the first `--events` CDNOW orders, subtracts a run of one order (start-up,
imports and the rule file), and reports instructions per event for each contender:

    python -m bench.bench_instructions                      # the hand-written loop and both backends
    python -m bench.bench_instructions --tree /path/to/other/checkout --backend python
    python -m bench.bench_instructions --backend python --parts   # where the python replay's instructions go

`--tree` puts another checkout of rulecrm first on the path (a worktree of the commit before a
change), so the two are counted in one run. Instructions are not time (memory stalls and system
calls cost more per instruction), so B1 itself is still judged by `bench_replay`.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_replay import ROOT, RULES, WORK, converted_cdnow

# The contenders: the hand-written loop, a backend's replay, and with `--parts` two pieces of the python
# replay. "reader" only reads the events (parse, check, sort); "unwritten" is the python replay with
# nothing flushed to the store (the engine's changes stay readable in memory) and no action written
# out: a measurement of the engine itself, not a mode anyone runs.
_REPLAY = """
import os, sys
from datetime import timezone
from pathlib import Path
contender, events, rules = sys.argv[1:4]
with open(os.devnull, "w", encoding="utf-8") as out:
    if contender == "handwritten":
        from bench.handwritten import run
        run(events, out)
    elif contender == "reader":
        from rulecrm.sources.reader import read_events
        for _ in read_events(events, default_tz=timezone.utc):
            pass
    else:
        from rulecrm.app import replay
        if contender == "unwritten":
            from rulecrm.engine.core import Engine
            Engine.flush = lambda engine: None
            replay.ActionWriter.__call__ = lambda writer, action: None
            contender = "python"
        replay.replay(Path(rules), events, out=out, backend_name=contender)
"""
_PARTS = (("reader", "reading the events alone"), ("unwritten", "python, no store writes, no output"))
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def first_events(count: int) -> Path:
    """The first `count` lines of the converted CDNOW file (cached next to it)."""
    source = converted_cdnow()
    path = WORK / f"{source.stem}-first{count}.jsonl"
    if not path.exists():
        with open(source, encoding="utf-8") as lines, open(path, "w", encoding="utf-8") as out:
            for number, line in enumerate(lines):
                if number == count:
                    break
                out.write(line)
    return path


def instructions(contender: str, events: Path, tree: Path) -> int:
    """Instructions executed by one replay of `events`, with `tree` first on the path."""
    completed = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, "-c", _REPLAY, contender, str(events), str(RULES)],
        env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"},
        cwd=tempfile.gettempdir(), capture_output=True, text=True,
    )
    found = _REFS.search(completed.stderr)
    if completed.returncode != 0 or found is None:
        raise RuntimeError(f"{contender} under valgrind failed:\n{completed.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_event(contender: str, tree: Path, many: Path, one: Path) -> float:
    """Instructions per event of replaying `many` beyond replaying `one` (a file of one event), side by side."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        counted = pool.submit(instructions, contender, many, tree)
        start_up = pool.submit(instructions, contender, one, tree)
        return (counted.result() - start_up.result()) / (_lines(many) - _lines(one))


def _lines(path: Path) -> int:
    with open(path, encoding="utf-8") as lines:
        return sum(1 for _ in lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="CDNOW orders replayed (default 10,000)")
    parser.add_argument("--backend", action="append", choices=["python", "durable"],
                        help="rulecrm backends to count (default both)")
    parser.add_argument("--tree", action="append", type=Path, default=[],
                        help="another checkout of rulecrm to count as well (repeatable)")
    parser.add_argument("--parts", action="store_true",
                        help="also count reading the events alone, and the python replay with nothing written")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.events < 2:
        sys.exit("--events must be at least 2")
    many, one = first_events(args.events), first_events(1)
    baseline = per_event("handwritten", ROOT, many, one)
    print(f"first {args.events:,} CDNOW orders; instructions per event beyond start-up (valgrind cachegrind)")
    print(f"  hand-written loop          {baseline:>10,.0f}")
    for tree in [ROOT, *args.tree]:
        for backend in args.backend or ["python", "durable"]:
            count = per_event(backend, tree.resolve(), many, one)
            label = f"{backend} @ {tree}"
            print(f"  {label:<26} {count:>10,.0f}  hand-written / this: {baseline / count:.2f}")
        if args.parts:
            for part, what in _PARTS:
                count = per_event(part, tree.resolve(), many, one)
                print(f"  {what} @ {tree}: {count:,.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
