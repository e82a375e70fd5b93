"""`check` on generated rule files: valid ones pass; near-valid ones never crash and every problem is positioned."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from rulecrm.rulefile.loader import check_rules
from rulecrm.testing.rulegen import mutated_rule_files, rule_files

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
