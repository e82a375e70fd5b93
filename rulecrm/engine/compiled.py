"""The rule set as the engine reads it: rules indexed by use and their expressions compiled, built once."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import attrs

from rulecrm.expr.ast import Call, Name
from rulecrm.expr.compiler import compile_condition, compile_expression
from rulecrm.expr.parser import children


@attrs.frozen
class CompiledRules:
    """Built by `CompiledRules.build(ruleset, functions)`; the engine only reads it."""

    rules_by_id: Mapping[str, object]
    profile_rules: tuple  # rules without `on`: evaluated against the profile after each change
    profile_reads: frozenset[str] | None  # the `customer.<field>`s they read; None: anything (a function call)
    event_rule_types: frozenset[str]  # event types some rule is `on`
    birthday_rules: tuple
    products: Mapping[str, object]  # sku -> Product
    product_maps: Mapping[str, Mapping]  # sku -> what `product.*` reads
    learn_skus: frozenset[str]  # products whose cycle is learned from each customer's orders
    after: Mapping[str, Callable]  # rule id -> its `after` delay
    recheck: Mapping[str, Callable]  # rule id -> its `recheck` condition
    untag: Mapping[str, Callable]  # rule id -> its `untag` condition (a constant untag is not compiled)
    steps: Mapping[tuple[str, int], Callable]  # (rule id, step number) -> that escalation step's delay

    @classmethod
    def build(cls, ruleset, functions=None) -> "CompiledRules":
        rules = ruleset.active_rules
        fns = dict(functions or {})
        products = {product.sku: product for product in ruleset.products}
        return cls(
            rules_by_id=_frozen({rule.id: rule for rule in rules}),
            profile_rules=tuple(rule for rule in rules if rule.on is None),
            profile_reads=profile_fields_read(rule for rule in rules if rule.on is None),
            event_rule_types=frozenset(rule.on for rule in rules if rule.on is not None),
            birthday_rules=tuple(rule for rule in rules if rule.on == "birthday"),
            products=_frozen(products),
            product_maps=_frozen({sku: product.as_mapping() for sku, product in products.items()}),
            learn_skus=frozenset(sku for sku, product in products.items() if product.learn_cycle),
            after=_frozen({r.id: compile_expression(r.after, fns) for r in rules if r.after is not None}),
            recheck=_frozen({r.id: compile_condition(r.recheck, fns) for r in rules if r.recheck is not None}),
            untag=_frozen({
                r.id: compile_condition(r.untag, fns) for r in rules if r.untag is not True and r.untag is not False
            }),
            steps=_frozen({
                (r.id, n): compile_expression(step.after, fns)
                for r in rules if r.escalate is not None
                for n, step in enumerate(r.escalate.steps, 1)
            }),
        )


def profile_fields_read(rules) -> frozenset[str] | None:
    """The first field of every `customer.<field>...` the rules' conditions (`when`, `untag`) read.

    None when they may read anything: a function call (a plugin's function may not depend on its
    arguments alone, e.g. the clock) or the customer as a whole.
    """
    fields: set[str] = set()
    stack = [tree for rule in rules for tree in (rule.when, rule.untag)
             if tree is not None and not isinstance(tree, bool)]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            return None
        if isinstance(node, Name) and node.root == "customer":
            if not node.path:
                return None
            fields.add(node.path[0])
        stack.extend(children(node))
    return frozenset(fields)


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)
