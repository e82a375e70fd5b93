"""`check` never crashes on any input, and stays fast on a 1,000-rule directory."""
from __future__ import annotations

import re
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulecrm.backends import available_backends
from rulecrm.rulefile.loader import check_rules
from rulecrm.testing import Shop
from rulecrm.testing.rulegen import LARGEST_NUMBERS, LONGEST_DURATIONS, TOO_LARGE_NUMBERS, TOO_LONG_DURATIONS

SPEC_EXAMPLE = (Path(__file__).parent / "rulefiles" / "spec_example.yaml").read_text(encoding="utf-8")
_FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_well_formed(result):
    ruleset, diagnostics = result
    assert all(d.line >= 1 and d.column >= 1 for d in diagnostics)
    assert all(d.severity in ("error", "warning") for d in diagnostics)
    assert (ruleset is None) == any(d.is_error for d in diagnostics)
    for diagnostic in diagnostics:
        diagnostic.format()


def check_bytes(tmp_path, data: bytes):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    return check_rules(path)


@_FUZZ
@given(st.text())
def test_random_text_never_crashes(tmp_path, text):
    assert_well_formed(check_bytes(tmp_path, text.encode("utf-8", "surrogatepass")))


@_FUZZ
@given(st.binary())
def test_random_bytes_never_crash(tmp_path, data):
    assert_well_formed(check_bytes(tmp_path, data))


_YAML_BITS = st.sampled_from([
    ":", "- ", "{", "}", "[", "]", "&a ", "*a", "<<: ", "!!int ", "'", '"', "\t", "\n", "#", "|", ">", "~", "  ",
    "on", "id: x", "after: 1d", "unless: x", "escalate:", "steps:", "notify:", "{customer.", "==", "cycle",
    "0", "-1", "1.5", "yes", "null", "30d", "09:00", "\\u00e9", "\x00", "\u5c0f",
    "36501d", "99999999999999999d", "99999999999999999999999", "9007199254740992", "1.0e400", ".inf", ".nan",
    " * 100000", "(a+)+$", "\\1", "(?=x)", "a{,3}",
])


@st.composite
def mutated_spec_example(draw):
    lines = SPEC_EXAMPLE.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "insert", "replace", "truncate"]))
        line = lines[index]
        if action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, line)
        elif action == "insert":
            at = draw(st.integers(0, len(line)))
            bit = draw(st.one_of(_YAML_BITS, st.text(max_size=5)))
            lines[index] = line[:at] + bit + line[at:]
        elif action == "replace":
            at = draw(st.integers(0, max(len(line) - 1, 0)))
            lines[index] = line[:at] + draw(_YAML_BITS) + line[at + 1 :]
        else:
            lines[index] = line[: draw(st.integers(0, len(line)))]
        if not lines:
            break
    return "".join(lines)


@_FUZZ
@given(mutated_spec_example())
def test_mutated_spec_example_never_crashes(tmp_path, text):
    assert_well_formed(check_bytes(tmp_path, text.encode("utf-8", "surrogatepass")))


# The numbers and durations of the spec example (not times of day, addresses or comments).
_VALUE = re.compile(r"(?<![\w.:/+\"'-])[0-9]+(?:ms|s|m|h|d|w)?(?![\w.:\"'])")
_SPEC_LINES = [line.split("  #")[0] for line in SPEC_EXAMPLE.splitlines()]
_PLACES = [(n, match.start(), match.end(), match.group()[-1].isalpha())
           for n, line in enumerate(_SPEC_LINES) for match in _VALUE.finditer(line)]
_DURATIONS = st.one_of(st.sampled_from(LONGEST_DURATIONS), st.sampled_from(TOO_LONG_DURATIONS))
_NUMBERS = st.one_of(st.sampled_from(LARGEST_NUMBERS), st.sampled_from(TOO_LARGE_NUMBERS))
SPEC_EVENTS = [
    {"id": "u", "type": "customer.upserted", "customer_id": "c", "at": "2026-03-01T09:00:00+08:00",
     "data": {"name": "王", "owner": "cs", "birthday": "1990-03-02"}},
    {"id": "o1", "type": "order.placed", "customer_id": "c", "at": "2026-03-01T10:00:00+08:00",
     "data": {"sku": "tea-xqg", "category": "tea", "amount": 128}},
    {"id": "o2", "type": "order.placed", "customer_id": "c", "at": "2026-03-20T10:00:00+08:00",
     "data": {"sku": "tea-xqg", "category": "tea", "amount": 128}},
    {"id": "t", "type": "chat.received", "customer_id": "c", "at": "2026-03-21T10:00:00+08:00",
     "data": {"text": "近期要买"}},
    {"id": "r", "type": "review.created", "customer_id": "c", "at": "2026-03-22T10:00:00+08:00",
     "data": {"review_id": "r1", "rating": 1, "text": "bad"}},
]


@st.composite
def extreme_spec_example(draw):
    """The spec example with some of its numbers and durations replaced by values at and beyond the limits."""
    lines = list(_SPEC_LINES)
    for index, start, end, is_duration in sorted(draw(st.sets(st.sampled_from(_PLACES), min_size=1, max_size=3)),
                                                 key=lambda place: -place[1]):
        value = draw(_DURATIONS if is_duration else st.one_of(_NUMBERS, _DURATIONS))
        lines[index] = lines[index][:start] + value + lines[index][end:]
    return "\n".join(lines) + "\n"


@_FUZZ
@given(extreme_spec_example())
def test_extreme_values_in_the_spec_example_are_refused_or_replay(tmp_path, text):
    ruleset, diagnostics = check_bytes(tmp_path, text.encode("utf-8"))
    assert_well_formed((ruleset, diagnostics))
    assert all(d.expected or d.hint for d in diagnostics if d.is_error)
    if ruleset is None:
        return
    results = []
    for backend in available_backends():
        with Shop(ruleset, backend=backend) as shop:
            shop.run(SPEC_EVENTS)
            results.append(shop.actions)
    assert all(result == results[0] for result in results)


def thousand_rules(directory: Path) -> None:
    (directory / "00-shop.yaml").write_text(SPEC_EXAMPLE.split("rules:")[0], encoding="utf-8")
    for part in range(10):
        chunks = ["rules:\n"]
        for number in range(50):
            rule = f"r{part}-{number}"
            chunks.append(
                f"  - id: {rule}-tag\n"
                f"    when: customer.order_count >= {number % 7 + 1} and customer.total_spent > {number}\n"
                f"    tag: {rule}\n"
                f"  - id: {rule}-remind\n"
                f"    on: order.placed\n"
                f'    when: event.category == "tea" and event.amount > {number}\n'
                f"    after: cycle - {number % 5}d\n"
                f"    unless: order.placed same sku\n"
                f'    notify: {{to: customer, channel: robot, template: "{{customer.name}}: {rule}"}}\n'
            )
        (directory / f"{part + 1:02d}-rules.yaml").write_text("".join(chunks), encoding="utf-8")


def test_a_thousand_rules_check_quickly(tmp_path):
    thousand_rules(tmp_path)
    started = time.perf_counter()
    ruleset, diagnostics = check_rules(tmp_path)
    elapsed = time.perf_counter() - started
    print(f"check_rules of {len(ruleset.rules)} rules took {elapsed:.3f} s")
    assert not [d for d in diagnostics if d.is_error]
    assert len(ruleset.rules) == 1000
    assert [rule.index for rule in ruleset.rules] == list(range(1000))
