"""Plans conditions for durable-rules: the typed message encoding, exact atoms in DNF, and shard limits.

Pure Python (no durable_rules import), so the plan can be inspected and tested anywhere.
Every guard below cites the durable-rules 2.0.28 limit it keeps us under (see
docs/durable-rules-notes.md and the C sources `rete.c`, `events.c`, `json.c`, `rules.h`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from rulecrm.backends.base import Condition, compile_when, conjunction, conjuncts
from rulecrm.expr import compiler
from rulecrm.expr.ast import BoolOp, Call, Compare, Contains, Literal, Membership, Name, Not
from rulecrm.expr.compiler import compile_condition
from rulecrm.expr.context import MISSING, EvalContext
from rulecrm.expr.parser import walk
from rulecrm.rulefile.model import Rule

# Type families of the message encoding: a value goes to the key of its own family only, so a
# test on `n__x` can never see a string or a bool (durable compares "99" < 100 lexicographically
# and treats true as 1).
NUM, STR, BOOL, DUR, TS = "n", "s", "b", "d", "t"
FAMILIES = (NUM, STR, BOOL, DUR, TS)
_FROM_COMPILER = {
    compiler.NUMBER: NUM,
    compiler.STRING: STR,
    compiler.BOOL: BOOL,
    compiler.DURATION: DUR,
    compiler.TIMESTAMP: TS,
}

UNSURE = object()  # a value durable cannot compare exactly: the rules reading it are decided in Python

MAX_SAFE_INT = 2**53  # beyond, int/double comparisons in the C core stop being exact
MAX_STRING = 4096  # reduceString takes unsigned short byte lengths: stay far below 65,535 bytes
MAX_DISJUNCTS = 32  # one durable rule per disjunct; above this the conjunct stays a Python residual
MAX_PATTERN_TESTS = 31  # at most 32 expressions per pattern, one of them the discriminator
MAX_RULES_PER_SHARD = 200  # > 4,096 rules -> error 106; notes advise rulesets of ~250 rules
MAX_KEYS_PER_SHARD = 240  # at most 255 properties per message, id/sid/t included
MAX_ALPHA_STACK = 48  # handleAlpha keeps pending alpha nodes on a 64-slot stack (error 303 above)
MAX_HASH_CHILDREN = 256  # 512-bucket child hashset per alpha node: full -> findAlpha loops forever
MAX_NEX_CHILDREN = 100  # 128-slot `$nex` child list per alpha node (error 107 above)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

_NEGATED = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_MIRRORED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ORDERING = frozenset({"<", "<=", ">", ">="})
_OP_RANK = {"==": 0, "ex": 1, "!=": 2, "<": 3, "<=": 4, ">": 5, ">=": 6, "nex": 7}


class Untranslatable(Exception):
    """This (sub)condition has no exact durable-rules form; it stays a Python residual."""


# -- the type encoding ---------------------------------------------------------------------------


def encode(value: Any) -> tuple[str | None, Any] | None:
    """(family, JSON value) for the message; None when the value behaves like MISSING everywhere.

    The JSON value is UNSURE when durable could not compare it exactly; the family is None for
    values whose Python semantics the encoding does not model (naive datetimes, subclasses).
    """
    kind = type(value)
    if kind is str:
        return STR, value if _sendable_string(value) else UNSURE
    if kind is int:
        return NUM, value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else UNSURE
    if kind is float:
        # json.c parses no exponent without a fraction ("1e+16" -> error 204) and json.dumps
        # writes NaN/Infinity: send only plain decimal spellings (repr round-trips through atof).
        text = repr(value)
        return NUM, value if "e" not in text and "n" not in text else UNSURE
    if kind is bool:
        return BOOL, "true" if value else "false"
    if kind is timedelta:
        micros = value // _MICROSECOND
        return DUR, micros if -MAX_SAFE_INT <= micros <= MAX_SAFE_INT else UNSURE
    if kind is datetime:
        try:
            aware = value.utcoffset() is not None
            micros = (value - _EPOCH) // _MICROSECOND if aware else None
        except Exception:  # noqa: BLE001 - a tzinfo that fails to answer: let Python decide
            return None, UNSURE
        if micros is None:
            return None, UNSURE
        return TS, micros if -MAX_SAFE_INT <= micros <= MAX_SAFE_INT else UNSURE
    if value is MISSING or not compiler.family(value):
        return None
    return None, UNSURE


def _sendable_string(text: str) -> bool:
    if len(text) > MAX_STRING:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")  # lone surrogates cannot reach the C core
    except UnicodeEncodeError:
        return False
    return True


def order_safe(text: str) -> bool:
    """Whether durable orders this string exactly like Python (code points).

    Measured: message strings end at their closing quote (0x22) and escapes are compared raw, so
    " ", "!", '"', "\\\\" and control characters break `<`/`>`; code points above 0x22 compare
    exactly (UTF-8 byte order is code point order).
    """
    return not text or (min(text) > '"' and "\\" not in text)


def _encode_literal(value: Any, ordering: bool) -> tuple[str, Any]:
    found = encode(value)
    if found is None or found[0] is None or found[1] is UNSURE:
        raise Untranslatable(f"literal {value!r} has no exact durable form")
    if ordering and found[0] == STR and not order_safe(value):
        raise Untranslatable(f"string {value!r} is not ordered exactly by durable")
    return found


# -- atoms and DNF -------------------------------------------------------------------------------

# An atom is (field, op, value): field = (family, (root, path)); op in == != < <= > >= ex nex.
# A DNF is a tuple of conjunctions (frozensets of atoms): () is false, (frozenset(),) is true.
TRUE: tuple = (frozenset(),)
FALSE: tuple = ()


class TooBig(Untranslatable):
    """The DNF would exceed a durable pattern limit."""


def _atom(field, op, value=None) -> tuple:
    return ((field, op, value),)


def _single(field, op, value=None) -> tuple:
    return (frozenset(_atom(field, op, value)),)


def _simplify(conj: frozenset) -> frozenset | None:
    """Drop implied `ex` tests; None when the conjunction can never hold."""
    present: dict = {}
    equal: dict = {}
    absent = set()
    for field, op, value in conj:
        if op == "nex":
            absent.add(field)
            continue
        present.setdefault(field[1], set()).add(field[0])
        if op == "==":
            if field in equal and equal[field] != value:
                return None  # one value cannot equal two others
            equal[field] = value
    for name, families in present.items():
        if len(families) > 1:
            return None  # a value has one family, so at most one typed key exists
        if (next(iter(families)), name) in absent:
            return None  # a key cannot be absent and tested
    # implied tests: `ex` next to another test of its key, `nex` of a family other than the present one
    implied = [
        (field, op, value)
        for field, op, value in conj
        if (op == "ex" and any(b[0] == field and b[1] != "ex" for b in conj))
        or (op == "nex" and field[1] in present)
    ]
    return conj.difference(implied) if implied else conj


def _normalise(conjs) -> tuple:
    kept = []
    for conj in conjs:
        conj = _simplify(conj)
        if conj is None:
            continue
        if len(conj) > MAX_PATTERN_TESTS:
            raise TooBig("pattern too long")
        kept.append(conj)
    unique = set(kept)
    # absorption: a conjunction that includes another one adds nothing to the disjunction
    minimal = [c for c in unique if not any(o < c for o in unique)]
    if len(minimal) > MAX_DISJUNCTS:
        raise TooBig("too many disjuncts")
    return tuple(sorted(minimal, key=_conj_order))


def _conj_order(conj: frozenset):
    return (len(conj), sorted(map(_atom_order, conj)))


def _atom_order(atom: tuple):
    (family, (root, path)), op, value = atom
    return (root, path, family, _OP_RANK[op], repr(value))


def dnf_or(*dnfs) -> tuple:
    return _normalise([conj for dnf in dnfs for conj in dnf])


def dnf_and(*dnfs) -> tuple:
    result = TRUE
    for dnf in dnfs:
        if len(result) * len(dnf) > MAX_DISJUNCTS * MAX_DISJUNCTS:
            raise TooBig("too many disjuncts")
        result = _normalise([a | b for a in result for b in dnf])
    return result


# -- translation ---------------------------------------------------------------------------------


def translate(node: Any, positive: bool = True) -> tuple:
    """The DNF of atoms that holds exactly when `node` is (positive) or is not (negative) True.

    Mirrors rulecrm.expr.compiler: comparisons with a missing or other-family value are False,
    `not in` is False for a missing value, and/or/not read only exact True as true.
    """
    if _is_constant(node):
        try:
            value = compile_condition(node, None)(EvalContext())
        except Exception as exc:  # noqa: BLE001 - leave anything surprising to Python
            raise Untranslatable(str(exc)) from None
        return TRUE if (value is True) == positive else FALSE
    if isinstance(node, Not):
        return translate(node.operand, not positive)
    if isinstance(node, BoolOp):
        parts = [translate(operand, positive) for operand in node.operands]
        return dnf_and(*parts) if (node.op == "and") == positive else dnf_or(*parts)
    if isinstance(node, Name):
        field = (BOOL, _name_key(node))
        return (_single(field, "==", "true") if positive
                else dnf_or(_single(field, "nex"), _single(field, "==", "false")))
    if isinstance(node, Compare):
        return _compare(node, positive)
    if isinstance(node, Membership):
        return _membership(node.item, node.container, node.op == "not in", positive)
    if isinstance(node, Contains):
        return _membership(node.item, node.container, False, positive)
    raise Untranslatable(f"{type(node).__name__} is evaluated in Python")


def _name_key(name: Name) -> tuple:
    return (name.root, tuple(name.path))


def _is_constant(node: Any) -> bool:
    return not any(isinstance(each, (Name, Call)) for each in walk(node))


def _compare(node: Compare, positive: bool) -> tuple:
    if isinstance(node.left, Name) and isinstance(node.right, Literal):
        name, op, value = node.left, node.op, node.right.value
    elif isinstance(node.left, Literal) and isinstance(node.right, Name):
        name, op, value = node.right, _MIRRORED[node.op], node.left.value
    else:
        raise Untranslatable("only a name against a literal is compared by durable")
    kind = compiler.family(value)
    ordering = op in _ORDERING
    if not kind or (ordering and kind == compiler.BOOL):
        return FALSE if positive else TRUE  # the compiler answers False for every value
    family, encoded = _encode_literal(value, ordering)
    field = (family, _name_key(name))
    if positive:
        return _single(field, op, encoded)
    # not (x op v): x missing or of another family (its typed key absent), or the flipped test;
    # exact because every family is totally ordered once NaN is kept out of the message.
    return dnf_or(_single(field, "nex"), _single(field, _NEGATED[op], encoded))


def _membership(item: Any, container: Any, negate: bool, positive: bool) -> tuple:
    if not (isinstance(item, Name) and isinstance(container, Literal)):
        raise Untranslatable("only a name in a literal list is tested by durable")
    values = container.value
    if isinstance(values, str):
        raise Untranslatable("substring tests are evaluated in Python")
    if not isinstance(values, tuple):
        return FALSE if positive else TRUE  # the compiler answers False for every value
    name = _name_key(item)
    by_family: dict[str, list] = {}
    for value in values:
        if compiler.family(value):
            family, encoded = _encode_literal(value, False)
            by_family.setdefault(family, []).append(encoded)
    member = dnf_or(*[_single((f, name), "==", v) for f, vs in by_family.items() for v in vs])
    outside = dnf_and(
        *[
            dnf_or(_single((f, name), "nex"), (frozenset((((f, name), "!=", v) for v in vs)),))
            for f, vs in by_family.items()
        ]
    )
    if not negate:
        return member if positive else outside
    # `not in` needs a present value: some typed key exists.
    if positive:
        present = dnf_or(*[_single((f, name), "ex") for f in FAMILIES])
        return dnf_and(present, outside)
    absent = (frozenset(((f, name), "nex", None) for f in FAMILIES),)
    return dnf_or(absent, member)


# -- rule plans and shards -----------------------------------------------------------------------


@attrs.define
class RulePlan:
    """How one rule is matched: durable disjuncts, then a Python residual for what durable matched.

    `disjuncts` is FALSE (never matches), TRUE (rides the catch-all rule) or a DNF of atoms.
    `full` decides the rule alone when a value it reads cannot be sent to durable exactly.
    """

    rule: Rule
    disjuncts: tuple
    residual: Condition | None
    full: Condition | None

    @property
    def index(self) -> int:
        return self.rule.index

    @property
    def names(self) -> frozenset:
        return frozenset(atom[0][1] for conj in self.disjuncts for atom in conj)

    def as_residual(self) -> RulePlan:
        """The same rule decided wholly in Python (riding the catch-all rule)."""
        return RulePlan(self.rule, TRUE, self.full, self.full)


def plan_rule(rule: Rule, functions: Mapping[str, Callable] | None) -> RulePlan:
    """Split the top-level `and`: translatable conjuncts go to durable (within the DNF caps)."""
    dnf, residual = TRUE, []
    for part in conjuncts(rule.when):
        try:
            dnf = dnf_and(dnf, translate(part))
        except Untranslatable:
            residual.append(part)
    full = compile_when(rule.when, functions)
    return RulePlan(rule, dnf, compile_when(conjunction(residual), functions), full)


def pattern_tests(conj: frozenset) -> tuple:
    """The atoms of one pattern in a canonical order, so that patterns share alpha-node prefixes."""
    return tuple(sorted(conj, key=_atom_order))


@attrs.define
class Shard:
    """One durable ruleset: deduplicated patterns (one rule each) and the rules they stand for."""

    patterns: list = attrs.field(factory=list)  # tuples of atoms, canonical order
    slot_rules: list = attrs.field(factory=list)  # rule indices per pattern
    always: list = attrs.field(factory=list)  # rule indices riding the catch-all rule
    plans: list = attrs.field(factory=list)

    def try_add(self, plan: RulePlan) -> bool:
        tests = [pattern_tests(conj) for conj in plan.disjuncts if conj]
        new = [t for t in dict.fromkeys(tests) if t not in self.patterns]
        if new and not fits(self.patterns + new):
            return False
        for t in new:
            self.patterns.append(t)
            self.slot_rules.append([])
        slots = {t: i for i, t in enumerate(self.patterns)}
        for t in dict.fromkeys(tests):
            self.slot_rules[slots[t]].append(plan.index)
        if any(not conj for conj in plan.disjuncts):
            self.always.append(plan.index)
        self.plans.append(plan)
        return True

    def fields(self) -> list:
        return sorted({atom[0] for t in self.patterns for atom in t}, key=lambda f: (f[1], f[0]))


def fits(patterns: Sequence[tuple]) -> bool:
    """Whether these patterns (under one discriminator node) stay inside durable's C limits."""
    if len(patterns) > MAX_RULES_PER_SHARD:
        return False
    if len({atom[0] for t in patterns for atom in t}) > MAX_KEYS_PER_SHARD:
        return False
    trie: dict = {}
    for tests in patterns:
        node = trie
        for atom in tests:
            node = node.setdefault(atom, {})
    try:
        return _stack_depth(trie) <= MAX_ALPHA_STACK
    except TooBig:
        return False


def _stack_depth(node: dict) -> int:
    """Worst-case size of handleAlpha's stack below this node (every child pushed when it matches).

    Children on one key testing `==` exclude each other; a key's `$nex` child excludes its others.
    """
    per_field: dict = {}
    hashed = nex = 0
    for field, op, _value in node:
        counts = per_field.setdefault(field, [0, 0, 0])  # nex, ==, other
        if op == "nex":
            counts[0] += 1
            nex += 1
        else:
            counts[1 if op == "==" else 2] += 1
            hashed += 1
    if hashed > MAX_HASH_CHILDREN or nex > MAX_NEX_CHILDREN:
        raise TooBig("too many children under one alpha node")
    width = sum(max(n, min(eq, 1) + other) for n, eq, other in per_field.values())
    deepest = max((_stack_depth(child) for child in node.values()), default=0)
    return max(width, width - 1 + deepest) if node else 0


def build_shards(plans: Sequence[RulePlan]) -> list[Shard]:
    """Pack one trigger's plans, in rule order, into as few shards as the limits allow."""
    shards: list[Shard] = []
    for plan in plans:
        if plan.disjuncts == FALSE:
            continue  # can never match: no durable rule, no residual
        if shards and shards[-1].try_add(plan):
            continue
        shard = Shard()
        if not shard.try_add(plan):
            # too big for an empty ruleset on its own: decide it in Python behind the catch-all
            shard.try_add(plan.as_residual())
        shards.append(shard)
    return shards


def plan_rules(rules: Sequence[Rule], functions: Mapping[str, Callable] | None) -> list[RulePlan]:
    return [plan_rule(rule, functions) for rule in rules]
