"""Bench B2: matching cost alone of the order.placed rules: python backend, durable backend, raw durable-rules."""
from __future__ import annotations

import argparse
import math
import sys
import time

from bench.bench_replay import RULES, converted_cdnow
from rulecrm.backends import get_backend
from rulecrm.engine.profile import Profile
from rulecrm.expr.context import EvalContext
from rulecrm.rulefile.loader import load_rules
from rulecrm.sources.reader import read_events

TRIGGER = "order.placed"
ROUND_TRIPS = "durable backend, every fact a round trip"


def contexts(ruleset, events_path, limit=None) -> list[EvalContext]:
    """One context per order, as the engine builds it: the event, the profile after it, product, cycle."""
    products = {p.sku: p for p in ruleset.products}
    learn = frozenset(p.sku for p in ruleset.products if p.learn_cycle)
    profiles: dict[str, Profile] = {}
    result = []
    for _line_no, event in read_events(events_path, default_tz=ruleset.shop.timezone):
        profile = profiles.get(event.customer_id) or profiles.setdefault(event.customer_id, Profile(event.customer_id))
        profile.apply(event, learn_skus=learn)
        product = products.get(event.data.get("sku"))
        result.append(EvalContext(
            event=event.as_mapping(), customer=profile.mapping(),
            product=product.as_mapping() if product else None, cycle=product.cycle if product else None,
        ))
        if limit is not None and len(result) >= limit:
            break
    return result


def backend_matches(name: str, rules, ctxs, **options) -> tuple[float, list]:
    """(seconds, matched rule ids per context) for a fresh rulecrm backend."""
    backend = get_backend(name)(rules, functions=None, **options)
    try:
        started = time.perf_counter()
        matched = [backend.match(TRIGGER, ctx) for ctx in ctxs]
        seconds = time.perf_counter() - started
    finally:
        backend.close()
    return seconds, [tuple(rule.id for rule in rules_) for rules_ in matched]


def raw_durable_matches(ctxs) -> tuple[float, list]:
    """(seconds, matched rule ids per context) with durable-rules driven directly, with the guards.

    One ruleset: `thank-big-order` (amount >= 50) and `repurchase`, which has no condition and so is
    also the catch-all every session fires (delete_state segfaults on a session where nothing ran).
    Each event is one fact with an explicit id and a float amount, in a session deleted right after.
    """
    import durable_rules_engine
    from durable.engine import Host

    class QuietHost(Host):  # no background timer threads; actions run inside assert_fact
        def _run(self):
            pass

    hits: list[str] = []
    definition = {
        "thank-big-order": {"all": [{"m": {"$and": [{"t": "order"}, {"$gte": {"amount": 50}}]}}]},
        "repurchase": {"all": [{"m": {"t": "order"}}]},
    }

    def action(name):
        return lambda c: hits.append(name)  # one parameter: two-parameter actions are async

    host = QuietHost()
    host.register_rulesets({"cdnow": {name: dict(body, run=action(name)) for name, body in definition.items()}})
    try:
        matched = []
        started = time.perf_counter()
        for n, ctx in enumerate(ctxs, 1):
            amount = ctx.event.get("amount")
            fact = {"id": n, "sid": ctx.customer["id"], "t": "order"}
            if type(amount) in (int, float) and math.isfinite(amount):
                fact["amount"] = float(amount)
            hits.clear()
            host.assert_fact("cdnow", fact)
            host.delete_state("cdnow", fact["sid"])
            matched.append(tuple(sorted(hits, key=list(definition).index)))
        seconds = time.perf_counter() - started
    finally:
        for ruleset in host._ruleset_list:
            durable_rules_engine.delete_ruleset(ruleset._handle)
        host._ruleset_list.clear()
        host._ruleset_directory.clear()
    return seconds, matched


def run(events_path=None, repeat: int = 3, limit=None) -> dict:
    """Best-of-`repeat` matching rates of the three; asserts they matched the same rules."""
    events_path = events_path or converted_cdnow()
    ruleset = load_rules(RULES)
    rules = ruleset.active_rules
    ctxs = contexts(ruleset, events_path, limit)
    runs = {
        "python backend": lambda: backend_matches("python", rules, ctxs),
        "durable backend": lambda: backend_matches("durable", rules, ctxs),
        # the target compares the cost of a round trip: here every fact makes one, as in raw durable-rules
        ROUND_TRIPS: lambda: backend_matches("durable", rules, ctxs, remembered_values=0),
        "raw durable-rules": lambda: raw_durable_matches(ctxs),
    }
    results, reference = {}, None
    for label, measure in runs.items():
        best = math.inf
        for _ in range(repeat):
            seconds, matched = measure()
            best = min(best, seconds)
        if reference is None:
            reference = matched
        assert matched == reference, f"{label} matched different rules than the python backend"
        results[label] = {"seconds": best, "per_s": len(ctxs) / best}
    return {
        "events": len(ctxs),
        "repeat": repeat,
        "matches": sum(len(m) for m in reference),
        "results": results,
        "durable_over_raw": results["raw durable-rules"]["per_s"] / results[ROUND_TRIPS]["per_s"],
        "remembering_over_raw": results["raw durable-rules"]["per_s"] / results["durable backend"]["per_s"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="only the first N events")
    args = parser.parse_args(argv)
    report = run(repeat=args.repeat, limit=args.limit)
    events, matches = report["events"], report["matches"]
    print(f"B2: matching {events} order.placed events ({matches} rule matches), best of {args.repeat}")
    for label, row in report["results"].items():
        print(f"  {label:40} {row['per_s']:>10,.0f} events/s  ({row['seconds']:.2f}s)")
    print(f"  durable backend time, every fact a round trip / raw durable-rules time: "
          f"{report['durable_over_raw']:.2f}x (target <= 2x)")
    print(f"  durable backend time, remembering facts / raw durable-rules time: "
          f"{report['remembering_over_raw']:.2f}x")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
