"""The rule set as the engine reads it: rules indexed by use and their expressions compiled, built once."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import attrs

from rulecrm.backends.base import conjuncts
from rulecrm.expr.ast import Call, Compare, Literal, Name
from rulecrm.expr.compiler import compile_condition, compile_expression
from rulecrm.expr.parser import walk


@attrs.frozen
class CompiledRules:
    """Built by `CompiledRules.build(ruleset, functions)`; the engine only reads it."""

    rules_by_id: Mapping[str, object]
    profile_rules: tuple  # rules without `on`: evaluated against the profile after each change
    profile_reads: frozenset[str] | None  # the `customer.<field>`s they read; None: anything (a function call)
    # with all these tags on a profile, no profile rule has anything left to do; None: some rule always may
    profile_done_tags: frozenset[str] | None
    event_rule_types: frozenset[str]  # event types some rule is `on`
    # event type -> the (field, text) each of its rules requires (`event.<field> == "text"`), or None
    # when one of them requires no such thing (see `texts_required`)
    event_texts_required: Mapping[str, tuple | None]
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
            profile_done_tags=tags_that_finish([rule for rule in rules if rule.on is None]),
            event_rule_types=frozenset(rule.on for rule in rules if rule.on is not None),
            event_texts_required=_frozen(texts_required(rule for rule in rules if rule.on is not None)),
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
    trees = [tree for rule in rules for tree in (rule.when, rule.untag)
             if tree is not None and not isinstance(tree, bool)]
    for tree in trees:
        for node in walk(tree):
            if isinstance(node, Call):
                return None
            if isinstance(node, Name) and node.root == "customer":
                if not node.path:
                    return None
                fields.add(node.path[0])
    return frozenset(fields)


def tags_that_finish(rules) -> frozenset[str] | None:
    """The tags with which a profile leaves these profile rules nothing to do, or None.

    A rule that only adds its tag (no `untag`, no `notify`) can do nothing once the tag is on, whatever
    its condition says, and no rule takes that tag off again (only an `untag` does). When every profile
    rule is such a rule, a profile with all their tags needs no evaluation at all, as a Rete network
    leaves a rule alone once its effect holds. A rule that notifies, or untags, may always act.
    """
    tags = set()
    for rule in rules:
        if rule.tag is None or rule.notify is not None or rule.untag is not False:
            return None
        tags.add(rule.tag)
    return frozenset(tags)


def texts_required(rules) -> dict[str, tuple | None]:
    """Per event type: the (event field, text) that each of its rules' `when` requires, or None.

    A rule whose condition is `event.<field> == "text" and ...` cannot hold for an event whose field is
    anything but that text (`and` holds only when every part does): an event that none of its type's
    rules can match needs no context and no match, which is the alpha memory of a Rete network. A type
    with a rule that requires no text (or whose condition calls a function: evaluating it could fail,
    and that must not depend on this shortcut) is always matched.
    """
    required: dict[str, list | None] = {}
    for rule in rules:
        if rule.on in required and required[rule.on] is None:
            continue
        text = _text_required(rule.when)
        if text is None:
            required[rule.on] = None
        else:
            required.setdefault(rule.on, []).append(text)
    return {on: None if texts is None else tuple(texts) for on, texts in required.items()}


def _text_required(when) -> tuple[str, str] | None:
    if when is None or _calls_a_function(when):
        return None
    for part in conjuncts(when):
        if (isinstance(part, Compare) and part.op == "==" and isinstance(part.left, Name)
                and part.left.root == "event" and len(part.left.path) == 1
                and isinstance(part.right, Literal) and type(part.right.value) is str):
            return part.left.path[0], part.right.value
    return None


def _calls_a_function(tree) -> bool:
    return any(isinstance(node, Call) for node in walk(tree))


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)
