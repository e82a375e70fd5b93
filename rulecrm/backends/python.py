"""The python backend: compiled closures per rule; the reference the durable backend is tested against."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rulecrm.backends.base import MatchingBackend, compile_when
from rulecrm.expr.context import EvalContext
from rulecrm.rulefile.model import Rule


class PythonBackend(MatchingBackend):
    name = "python"

    def __init__(self, rules: Sequence[Rule], *, functions: Mapping[str, Callable] | None = None):
        super().__init__(rules, functions=functions)
        self._plans = {
            trigger: tuple((rule, compile_when(rule.when, functions)) for rule in group)
            for trigger, group in self.rules_by_trigger.items()
        }

    def match(self, trigger: str | None, ctx: EvalContext) -> list[Rule]:
        plan = self._plans.get(trigger)
        if not plan:
            return []
        return [rule for rule, condition in plan if condition is None or condition(ctx)]
