"""The hand-written baseline of bench B1 and rulecrm (both backends) decide identical actions on real CDNOW lines."""
from __future__ import annotations

import io
import itertools

import pytest

from bench.bench_replay import RULES, action_set
from bench.datasets import cdnow_events
from bench.handwritten import run as handwritten
from rulecrm.app.replay import replay
from rulecrm.backends import available_backends

LINES = 3_000


@pytest.fixture(scope="module")
def events(real_data, tmp_path_factory):
    with open(real_data / "cdnow" / "CDNOW_master.txt", encoding="ascii") as source:
        head = "".join(itertools.islice(source, LINES + 1))  # the header and LINES purchases
    path = tmp_path_factory.mktemp("bench") / "cdnow-head.jsonl"
    assert cdnow_events(io.StringIO(head), path) == LINES
    return path


@pytest.fixture(scope="module")
def baseline(events, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "handwritten.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        assert handwritten(events, out)["events"] == LINES
    return action_set(path)


@pytest.mark.parametrize("backend", ["python", "durable"])
def test_handwritten_loop_and_rulecrm_agree(backend, events, baseline, tmp_path):
    if backend not in available_backends():
        pytest.skip("durable-rules does not import on this Python")
    path = tmp_path / "actions.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        summary = replay(RULES, events, out=out, backend_name=backend)
    assert summary.applied == LINES
    actions = action_set(path)
    kinds = {key.split("|")[0] for key, *_ in baseline}
    assert {"lifecycle", "repeat-buyer", "big-spender", "thank-big-order", "repurchase", "win-back"} <= kinds
    assert any(status == "suppressed" for _key, status, *_ in baseline)
    assert actions == baseline
