"""`rulecrm test RULES`: property-test a shop's rules with generated event streams and the built-in invariants."""
from __future__ import annotations

import json

import attrs
import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import reported_errors

EXIT_OK = 0
EXIT_FAILED = 1


@attrs.frozen
class Counterexample:
    """The shrunk stream that broke an invariant, and the violation it caused."""

    events: tuple
    violation: AssertionError
    actions: tuple

    def lines(self) -> list[str]:
        name = getattr(self.violation, "invariant", type(self.violation).__name__)
        out = [f"FAILED: invariant {name} does not hold for these rules.", "",
               f"Counter-example (shrunk): {len(self.events)} event(s), as JSON lines "
               "(save them and run `rulecrm replay --rules RULES --events FILE --out -` to see every action):"]
        out += ["  " + json.dumps(event, ensure_ascii=False) for event in self.events]
        out += ["", *str(self.violation).splitlines()]
        return out


def find_counterexample(ruleset, *, examples=100, seed=None, backend="python"):
    """Run generated streams through a fresh `Shop` each; the shrunk failing one, or None."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seed_decorator
    from hypothesis.reporting import with_reporter

    from rulecrm.testing.harness import Shop
    from rulecrm.testing.invariants import InvariantViolation, check_all
    from rulecrm.testing.strategies import event_streams

    last = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False,
              phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink))
    @given(event_streams(ruleset=ruleset))
    def property_(events):
        with Shop(ruleset, backend=backend) as shop:
            until = shop.settle_until(events)
            actions = shop.run(events, until=until)
        try:
            check_all(ruleset, events, actions, until=until)
        except InvariantViolation as violation:
            last[:] = [Counterexample(tuple(events), violation, tuple(actions))]
            raise

    if seed is not None:
        property_ = seed_decorator(seed)(property_)
    with with_reporter(lambda _text: None):
        try:
            property_()
        except InvariantViolation:
            return last[0]
    return None


@click.command("test")
@click.argument("rules", type=click.Path(exists=True))
@click.option("--examples", default=100, show_default=True, type=click.IntRange(min=1),
              help="How many generated event streams to try.")
@click.option("--seed", default=None, type=int, help="Random seed (default: a fixed, derandomized search).")
@click.option("--backend", type=click.Choice(["python", "durable"]), default="python", show_default=True,
              help="Matching backend the engine runs on.")
@pass_cli_context
def test_command(context, rules, examples, seed, backend):
    """Check RULES against rulecrm's invariants on generated event streams.

    Caps hold in every window (and are not bypassed on another channel or kind), nothing
    marketing reaches an opted-out customer, escalations happen exactly when items are
    unhandled, nothing is sent twice, quiet hours hold. On failure, prints the shrunk
    counter-example and exits 1.
    """
    from rulecrm.plugins import load_rules_with

    with reported_errors(EXIT_FAILED):
        ruleset = load_rules_with(context.manager, rules)
        found = find_counterexample(ruleset, examples=examples, seed=seed, backend=backend)
    if found is None:
        click.echo(f"{examples} examples, all invariants held")
        return EXIT_OK
    for line in found.lines():
        click.echo(line)
    return EXIT_FAILED
