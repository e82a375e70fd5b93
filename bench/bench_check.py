"""Bench B5: `rulecrm check` of a directory with 1,000 rules, as a user runs it (a fresh process each time).

    python -m bench.bench_check [--rules 1000] [--runs 7] [--keep DIR]

The rules are written into 10 files of a temporary directory: tags from the profile, chat rules with
`matches`, repurchase reminders with `after`/`unless`, escalations of bad reviews and stage rules,
in the proportions of a real shop's playbook; every rule is valid. Each run is a child process
(`python -m rulecrm check DIR`), timed by the wall clock from start to exit, interpreter start
included. Bytecode is compiled first, as `pip install` does: a checkout run with
PYTHONDONTWRITEBYTECODE would compile every module on every start. Prints the median and the
spread and exits 1 when the median is over the target.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 0.3
FILES = 10

HEADER = """shop: {timezone: Asia/Shanghai, quiet_hours: "22:00-08:00"}
products:
  - {sku: green-tea, name: Longjing Green Tea, category: tea, cycle: 30d}
  - {sku: puer-cake, name: Pu'er Cake, category: tea, cycle: 60d, learn_cycle: true}
contacts:
  cs: {channel: console, address: cs-desk}
caps:
  - {id: marketing-weekly, kinds: [marketing], max: 1, per: 7d}
"""

SHAPES = (
    """  - id: vip-{n}
    description: spent {n} or more
    when: customer.total_spent >= {n} and customer.order_count >= 2
    tag: vip-{n}
    untag: true
""",
    """  - id: chat-{n}
    on: chat.received
    when: event.text matches "(?i)soon|restock|w{n}"
    tag: intent-{n}
    notify: {{to: cs, kind: service, template: "{{customer.name}} asked: {{event.text}}"}}
""",
    """  - id: refill-{n}
    on: order.placed
    when: event.category == "tea"
    after: cycle - 3d
    unless: order.placed same sku
    notify: {{to: customer, kind: marketing, template: "{{customer.name}}, more {{product.name}}?"}}
""",
    """  - id: review-{n}
    on: review.created
    when: event.rating <= 2
    notify: {{to: cs, kind: service, template: "{{event.rating}} stars: {{event.text}}"}}
    escalate:
      unless: review.handled same review_id
      steps:
        - {{after: 2h, notify: {{to: cs}}}}
        - {{after: 24h, notify: {{to: cs}}}}
""",
    """  - id: lapsed-{n}
    on: stage.changed
    when: event.to == "dormant" and customer.order_count >= 1
    notify: {{to: customer, kind: marketing, template: "We miss you, {{customer.name}}"}}
""",
)


def write_rules(directory: Path, count: int) -> Path:
    """`count` valid rules in FILES files (the shop's settings in the first)."""
    per_file = -(-count // FILES)
    for index in range(FILES):
        numbers = range(index * per_file, min(count, (index + 1) * per_file))
        body = "".join(SHAPES[n % len(SHAPES)].format(n=n) for n in numbers)
        head = HEADER if index == 0 else ""
        (directory / f"{index:02d}-rules.yaml").write_text(f"{head}rules:\n{body}", encoding="utf-8")
    return directory


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return elapsed


def run(rule_count: int, runs: int, keep: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="rulecrm-b5-") as scratch:
        directory = keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        write_rules(directory, rule_count)
        check = [sys.executable, "-m", "rulecrm", "check", str(directory)]
        timed(check, env)  # writes the bytecode, as an install would have
        seconds = [timed(check, env) for _ in range(runs)]
        start_up = statistics.median(timed([sys.executable, "-c", "pass"], env) for _ in range(runs))
    return {"rules": rule_count, "runs": runs, "median": statistics.median(seconds), "min": min(seconds),
            "max": max(seconds), "python_start": start_up}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the rules here and keep them")
    args = parser.parse_args(argv)
    result = run(args.rules, args.runs, args.keep)
    verdict = "met" if result["median"] <= TARGET_SECONDS else "NOT met"
    print(f"B5: rulecrm check of {result['rules']} rules in {FILES} files: median {result['median']:.3f} s "
          f"(min {result['min']:.3f}, max {result['max']:.3f}, {result['runs']} runs; bare interpreter start "
          f"{result['python_start']:.3f} s); target <= {TARGET_SECONDS} s: {verdict}")
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    sys.exit(main())
