"""`check` on generated rule files: valid ones pass; near-valid ones never crash and every problem is positioned;
extreme numbers and durations are refused with a position, or else the rules replay without an exception."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulecrm.backends import available_backends
from rulecrm.errors import EventError
from rulecrm.events import Event
from rulecrm.rulefile.loader import check_rules
from rulecrm.testing import Shop, event_streams
from rulecrm.testing.rulegen import extreme_rule_files, mutated_rule_files, rule_files
from rulecrm.testing.strategies import DEFAULT_MIX

_FUZZ = settings(deadline=None, max_examples=150,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check_text(tmp_path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return check_rules(path)


@_FUZZ
@given(rule_files())
def test_generated_rule_files_have_no_errors(tmp_path, text):
    ruleset, diagnostics = check_text(tmp_path, text)
    errors = [d.format() for d in diagnostics if d.is_error]
    assert not errors, "\n".join(errors) + "\n---\n" + text
    assert ruleset is not None and ruleset.rules


@_FUZZ
@given(mutated_rule_files())
def test_mutated_rule_files_never_crash_and_every_problem_is_positioned(tmp_path, text):
    ruleset, diagnostics = check_text(tmp_path, text)
    assert (ruleset is None) == any(d.is_error for d in diagnostics)
    for diagnostic in diagnostics:
        assert diagnostic.line >= 1 and diagnostic.column >= 1, diagnostic
        assert diagnostic.message and diagnostic.severity in ("error", "warning")
        assert diagnostic.format().count(":") >= 3


def valid(events, ruleset) -> list[dict]:
    """The events that pass validation (a stream may draw values that are refused as input)."""
    kept = []
    for event in events:
        try:
            Event.from_dict(event, default_tz=ruleset.shop.timezone)
        except EventError:
            continue
        kept.append(event)
    return kept


@_FUZZ
@given(extreme_rule_files(), st.data())
def test_extreme_numbers_and_durations_are_refused_with_a_position_or_replay(tmp_path, text, data):
    ruleset, diagnostics = check_text(tmp_path, text)  # no exception may escape
    assert (ruleset is None) == any(d.is_error for d in diagnostics)
    for diagnostic in diagnostics:
        assert diagnostic.line >= 1 and diagnostic.column >= 1, diagnostic
        assert diagnostic.message and diagnostic.format().count(":") >= 3
        assert diagnostic.severity == "warning" or diagnostic.expected or diagnostic.hint, diagnostic
    if ruleset is None:
        return
    # The rules' own trigger types come first, so that the extreme delays are reached.
    own = sorted({rule.on for rule in ruleset.active_rules if rule.on in DEFAULT_MIX})
    stream = event_streams(ruleset=ruleset, size=st.integers(1, 12), mix=st.sampled_from(own + list(DEFAULT_MIX)))
    events = valid(data.draw(stream), ruleset)
    results = []
    for backend in available_backends():
        with Shop(ruleset, backend=backend) as shop:
            shop.run(events)  # to the last event plus the rules' longest delay: up to centuries of timers
            results.append(shop.actions)
    assert all(result == results[0] for result in results)
