"""The docs are tested: every YAML example in them is a valid rule file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rulecrm.rulefile.loader import check_rules

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = [
    (path.name, n, block)
    for path in sorted(DOCS.glob("*.md"))
    for n, block in enumerate(re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), re.S))
]


def test_docs_have_examples():
    assert EXAMPLES


@pytest.mark.parametrize("name,number,block", EXAMPLES, ids=[f"{n}-{i}" for n, i, _ in EXAMPLES])
def test_yaml_examples_in_docs_are_valid(tmp_path, name, number, block):
    path = tmp_path / f"{number}.yaml"
    path.write_text(block, encoding="utf-8")
    _ruleset, diagnostics = check_rules(path)
    assert [d.format() for d in diagnostics if d.is_error] == []
