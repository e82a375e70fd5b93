"""The durable backend: durable-rules' Rete core fenced in; the only module that imports durable_rules.

Per trigger the rules are planned (durable_plan) into shards, one durable ruleset each. A `match`
asserts one fact per shard in a session that lives only for that call, then deletes the session.

A fact's outcome depends on its encoded values alone (each session is new and holds nothing else),
and through them only on the outcome of each test: every test compares one value with a constant
(or asks whether it is there), so two values on the same side of each constant a key is compared
with pass the same tests. Each ruleset therefore remembers the durable rules fired for its most
recent *fact classes*, the position of each value among its key's constants, as a Rete network's
alpha memory remembers its tests: a fact of a class seen before makes no round trip. The CDNOW
replay makes 11 round trips for its 158,171 facts (28,772 distinct ones).
"""
from __future__ import annotations

import itertools
import re
import sys
import warnings
import weakref
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence

import attrs
import durable_rules_engine
from durable.engine import Host, MessageNotHandledException

from rulecrm.backends.base import MatchingBackend
from rulecrm.backends.durable_plan import (
    FAMILIES,
    STR,
    UNSURE,
    Shard,
    build_shards,
    encode,
    order_safe,
    plan_rules,
)
from rulecrm.errors import RulecrmError
from rulecrm.expr.context import MISSING, EvalContext, resolve
from rulecrm.rulefile.model import Rule

TAG = "rulecrm"  # discriminator: every pattern tests t == TAG, so none can match a session's state fact
CLOSE = -1  # slot of the catch-all rule
SESSION_BUDGET = 1000  # 1,024 sessions per ruleset; the 1,025th raises MemoryError
# Values of remembered fact classes per ruleset (a class holds one per field its ruleset reads), oldest
# forgotten first: at most a few MB per ruleset. Classes are few (at most 2 × constants + 2 per key), so
# this bounds only rulesets that read very many keys.
REMEMBERED_VALUES = 32_768
_ORDERING = frozenset({"<", "<=", ">", ">="})
_OPERATORS = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_PLAIN_PART = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*\Z")
_RESERVED_KEYS = ("id", "sid", "t", "$s", "$i", "$m", "$l", "$r", "m", "all", "any", "pri", "count", "cap", "dist")
# Python 3.12 warns from durable's own engine.py on every action; under -W error the action
# aborts and locks the session, so those warnings are silenced around durable calls there.
_SILENCE_WARNINGS = sys.version_info >= (3, 12)


class _Host(Host):
    """A Host without background timers: every Host starts two threads that never stop and keep it
    alive forever; actions still run synchronously inside `assert_fact`."""

    def _run(self) -> None:
        pass


@attrs.define
class _Field:
    """One name read by a shard's patterns, with its typed message keys."""

    root: str
    path: tuple
    keys: dict  # family -> message key
    ordered: bool  # its string key is ordered (<, <=, ...): strings must be order_safe
    dependents: frozenset  # rule indices whose durable patterns read it


@attrs.define
class _Ruleset:
    name: str
    fields: list
    slot_rules: list  # rule indices per durable rule slot
    always: tuple  # rule indices riding the catch-all rule
    definition: dict  # the JSON registered (without actions), for inspection
    unclosed: int = 0  # sessions that could not be deleted safely
    remembers: int = 0  # fact classes kept in `fired_for` at most
    # message key -> the constants its tests compare with, sorted: a value's class is its place among them
    constants: dict = attrs.field(factory=dict)
    # a fact's class -> the slots durable fired for it (insertion order: oldest first)
    fired_for: dict = attrs.field(factory=dict)


class DurableBackend(MatchingBackend):
    name = "durable"

    def __init__(self, rules: Sequence[Rule], *, functions: Mapping[str, Callable] | None = None,
                 remembered_values: int = REMEMBERED_VALUES):
        """`remembered_values`: the budget of remembered fact classes per ruleset, in values (0: every fact
        is a round trip, as bench B2 measures the cost of one)."""
        super().__init__(rules, functions=functions)
        self._remembered_values = remembered_values
        self._host = _Host()
        self._hits: list[int] = []
        self._errors: list[BaseException] = []
        self._ids = itertools.count(1)  # explicit unique message ids: no false MessageObserved, faster
        self._rulesets: dict[str | None, list[_Ruleset]] = {}
        self._plans: dict[int, object] = {}
        self._finalizer = weakref.finalize(self, _dispose, self._host)
        try:
            for trigger, group in self.rules_by_trigger.items():
                plans = plan_rules(group, functions)
                shards = build_shards(plans)
                for shard in shards:
                    for plan in shard.plans:
                        self._plans[plan.index] = plan
                self._rulesets[trigger] = [self._register(shard) for shard in shards]
        except BaseException:
            self.close()
            raise

    @property
    def definitions(self) -> dict[str, dict]:
        """The durable JSON of every ruleset, by ruleset name (actions left out)."""
        return {rs.name: rs.definition for group in self._rulesets.values() for rs in group}

    # -- registration ------------------------------------------------------------------------

    def _register(self, shard: Shard) -> _Ruleset:
        name = f"rulecrm{len(self._host._ruleset_list)}"
        keys = _message_keys(shard.fields())
        ordered = {atom[0] for tests in shard.patterns for atom in tests if atom[1] in _ORDERING}
        readers: dict = {}
        for plan in shard.plans:
            for name_key in plan.names:
                readers.setdefault(name_key, set()).add(plan.index)
        fields = []
        for name_key, indices in readers.items():
            typed = {family: keys[(family, name_key)] for family in FAMILIES if (family, name_key) in keys}
            fields.append(_Field(name_key[0], name_key[1], typed, (STR, name_key) in ordered, frozenset(indices)))
        constants: dict = {}
        for tests in shard.patterns:
            for field, op, value in tests:
                if op not in ("ex", "nex"):
                    constants.setdefault(keys[field], set()).add(value)
        definition = {}
        for slot, tests in enumerate(shard.patterns):
            expressions = [{"t": TAG}] + [_test_json(keys[field], op, value) for field, op, value in tests]
            definition[f"r{slot}"] = {"all": [{"m": {"$and": expressions}}]}
        # Catch-all: fires once in every session, so delete_state never meets a session in which
        # no action ran (that segfaults); rules decided wholly in Python ride on it.
        definition["close"] = {"all": [{"m": {"t": TAG}}]}
        # Registration removes `run` from what it is given: it gets a fresh copy with the actions.
        registered = {rule: dict(body, run=self._action(_slot(rule))) for rule, body in definition.items()}
        self._host.register_rulesets({name: registered})
        budget = self._remembered_values
        remembers = max(1, budget // max(1, len(keys))) if budget > 0 else 0
        return _Ruleset(name, fields, shard.slot_rules, tuple(shard.always), definition, remembers=remembers,
                        constants={key: tuple(sorted(values)) for key, values in constants.items()})

    def _action(self, slot: int) -> Callable:
        hits, errors = self._hits, self._errors

        def fired(c):  # exactly one parameter: durable treats two-parameter actions as async
            # An exception escaping here is swallowed into the session state and locks it.
            try:
                hits.append(slot)
            except BaseException as exc:  # noqa: BLE001 - collected, re-raised after the call
                errors.append(exc)

        return fired

    # -- matching ----------------------------------------------------------------------------

    def match(self, trigger: str | None, ctx: EvalContext) -> list[Rule]:
        if not self._finalizer.alive:
            raise RulecrmError("the durable backend is closed")
        rulesets = self._rulesets.get(trigger)
        if not rulesets:
            return []
        matched: set[int] = set()
        unsure: set[int] = set()
        for rs in rulesets:
            if not rs.slot_rules:
                # every rule here is decided in Python (no condition, or none durable can take): durable
                # would only fire the catch-all, so the round trip is skipped
                matched.update(rs.always)
                continue
            values = {}
            fact_class = self._fill(rs, ctx, values, unsure)
            fired = rs.fired_for.get(fact_class)
            if fired is None:
                sid = _session_id(ctx)
                fired = self._evaluate(rs, {"id": next(self._ids), "sid": sid, "t": TAG, **values}, sid)
                if rs.remembers:
                    _remember(rs, fact_class, fired)
            for slot in fired:
                matched.update(rs.always if slot == CLOSE else rs.slot_rules[slot])
        result = []
        for index in sorted(matched | unsure):
            plan = self._plans[index]
            # A rule reading a value durable could not see exactly is decided in Python alone.
            condition = plan.full if index in unsure else plan.residual
            if condition is None or condition(ctx):
                result.append(plan.rule)
        return result

    @staticmethod
    def _fill(rs: _Ruleset, ctx: EvalContext, values: dict, unsure: set) -> tuple:
        """Type-encode into `values` (message key -> value) what the shard reads; mark the readers of
        inexact values unsure. Returns the fact's class: (key, place among the key's constants) for
        each value sent, in the ruleset's own field order, so that equal classes give equal tuples.

        A value's place is 2i when it lies strictly between the constants i-1 and i, and 2i + 1 when it
        equals constant i: every test on the key (==, !=, <, <=, >, >= a constant; ex, nex) is then
        decided alike for all values of one place.
        """
        fact_class = []
        constants_of = rs.constants
        for field in rs.fields:
            value = resolve(ctx, field.root, field.path)
            if value is MISSING:
                continue
            found = encode(value)
            if found is None:
                continue  # behaves like a missing value in every translated test
            family, encoded = found
            key = field.keys.get(family)
            if family is None or (
                key is not None
                and (encoded is UNSURE or (field.ordered and family == STR and not order_safe(encoded)))
            ):
                unsure.update(field.dependents)
            elif key is not None:
                values[key] = encoded
                constants = constants_of.get(key, ())
                place = bisect_left(constants, encoded)
                fact_class.append((key, 2 * place + (place < len(constants) and constants[place] == encoded)))
        return tuple(fact_class)

    def _evaluate(self, rs: _Ruleset, message: dict, sid: str) -> tuple[int, ...]:
        """Assert one fact in a one-call session; the slots of the durable rules that fired."""
        if rs.unclosed >= SESSION_BUDGET:
            raise RulecrmError(
                f"durable ruleset {rs.name} has {rs.unclosed} sessions that could not be closed "
                "(limit 1,024 per ruleset); use --backend python"
            )
        hits = self._hits
        hits.clear()
        self._errors.clear()
        try:
            if _SILENCE_WARNINGS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._host.assert_fact(rs.name, message)
            else:
                self._host.assert_fact(rs.name, message)
        except MessageNotHandledException:
            # No alpha test passed (cannot happen while the catch-all exists): nothing matched.
            rs.unclosed += 1
            return ()
        except Exception as exc:
            rs.unclosed += 1
            raise RulecrmError(f"durable-rules failed on ruleset {rs.name}: {exc}; use --backend python") from exc
        if self._errors:
            raise self._errors[0]
        fired = tuple(hits)
        if CLOSE in fired:
            self._host.delete_state(rs.name, sid)  # frees the sid slot: 1,024 sessions per ruleset
        else:
            rs.unclosed += 1  # delete_state on a session where no action ran segfaults
        return fired

    def close(self) -> None:
        """Delete every C ruleset handle; idempotent."""
        self._finalizer()


def _remember(rs: _Ruleset, fact_class: tuple, fired: tuple) -> None:
    fired_for = rs.fired_for
    if len(fired_for) >= rs.remembers:
        del fired_for[next(iter(fired_for))]
    fired_for[fact_class] = fired


def _dispose(host: Host) -> None:
    # Sessions are deleted after each match; what remains is the C rulesets themselves.
    for ruleset in host._ruleset_list:
        durable_rules_engine.delete_ruleset(ruleset._handle)
    host._ruleset_list.clear()
    host._ruleset_directory.clear()


def _slot(rule_name: str) -> int:
    return CLOSE if rule_name == "close" else int(rule_name[1:])


def _test_json(key: str, op: str, value) -> dict:
    if op == "==":
        return {key: value}
    if op == "ex":
        return {"$ex": {key: 1}}
    if op == "nex":
        return {"$nex": {key: 1}}
    return {_OPERATORS[op]: {key: value}}


def _message_keys(fields: Sequence[tuple]) -> dict[tuple, str]:
    """A message key per (family, name): readable when the path allows, always hash-distinct.

    durable-rules finds properties by a 32-bit FNV-1 hash of their name: two keys with one hash
    (or a key hashing like id/sid/t) would be read as the same property.
    """
    taken = {_fnv1(key) for key in _RESERVED_KEYS}
    keys = {}
    counter = itertools.count()
    for family, (root, path) in fields:
        parts = (root, *path)
        key = f"{family}__" + "__".join(parts)
        if len(key) > 100 or not all(_PLAIN_PART.match(part) for part in parts) or _fnv1(key) in taken:
            key = f"{family}_{next(counter)}"
            while _fnv1(key) in taken:
                key = f"{family}_{next(counter)}"
        taken.add(_fnv1(key))
        keys[(family, (root, path))] = key
    return keys


def _fnv1(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def _session_id(ctx: EvalContext) -> str:
    """The customer id as sid when it is plain text; sessions only live for one call anyway."""
    customer = ctx.customer
    cid = customer.get("id") if customer is not None else None
    if isinstance(cid, (str, int)) and not isinstance(cid, bool):
        text = str(cid)
        if 0 < len(text) <= 128 and text.isascii() and text.isprintable():
            return text
    return "customer"
