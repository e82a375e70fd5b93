"""Positions inside YAML scalars: every character of a value maps back to where it was written."""
from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rulecrm.rulefile import scalarpos
from rulecrm.rulefile.scalarpos import locator
from rulecrm.rulefile.yamlpos import compose

TEXT = st.lists(st.sampled_from(list("ab {}:'\"\\\t\n 小é#-|>") + ["  ", "\n\n", "x" * 12]), max_size=30).map("".join)


def _scalar(document: str):
    parsed = compose(document, "rules.yaml")
    assert not parsed.diagnostics
    return parsed.documents[0].pairs[0][1].items[0].pairs[0][1]  # rules[0].template


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(TEXT, st.sampled_from([None, '"', "'", "|", ">"]), st.sampled_from([12, 30, 80]))
def test_every_character_maps_to_its_place_in_the_file(text, style, width):
    document = yaml.dump({"rules": [{"template": text}]}, default_style=style, allow_unicode=True, width=width)
    node = _scalar(document)
    lines = document.splitlines()
    locate = locator(node, lines)
    assert locate is not None, document  # whatever style PyYAML chose, the value is matched exactly
    for offset, char in enumerate(node.text):
        line, column = locate(offset)
        if char in " \n":
            continue  # folded line breaks stand for no single character
        written = lines[line - 1][column - 1]
        assert written == char or written in "\\'", (document, offset)  # or the start of an escape


def test_hand_written_scalars():
    document = (
        "rules:\n"
        "- template: plain text\n"
        "    continued {x}  # a comment\n"
    )
    node = _scalar(document)
    assert node.text == "plain text continued {x}"
    assert locator(node, document.splitlines())(node.text.index("{")) == (3, 15)


def test_a_value_that_does_not_match_its_source_has_no_locator():
    document = 'rules:\n- template: "a {x}"\n'
    node = _scalar(document)
    node.text = "b {x}"  # as if the file changed under us
    assert locator(node, document.splitlines()) is None


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(TEXT, st.sampled_from([None, '"', "'"]), st.sampled_from([12, 30, 80]))
def test_a_value_written_as_is_gets_the_positions_of_the_character_walk(text, style, width):
    document = yaml.dump({"rules": [{"template": text}]}, default_style=style, allow_unicode=True, width=width)
    node = _scalar(document)
    lines = document.splitlines()
    quick = locator(node, lines)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scalarpos, "_written_as_is", lambda *args: False)
        walked = locator(node, lines)
    assert (quick is None) == (walked is None)
    if quick is not None:
        offsets = range(-1, len(node.text) + 2)
        assert [quick(offset) for offset in offsets] == [walked(offset) for offset in offsets], document
