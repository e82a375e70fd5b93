"""`check` never crashes on any input, and stays fast on a 1,000-rule directory."""
from __future__ import annotations

import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulecrm.rulefile.loader import check_rules

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
