"""The command line in process, and the tea shop and CDNOW inputs the report tests replay."""
from __future__ import annotations

from pathlib import Path

import pytest
from cdnow_head import edited_cdnow_rules, write_cdnow_head
from click.testing import CliRunner

from rulecrm import plugins
from rulecrm.cli import CliContext, main

REPO = Path(__file__).resolve().parents[2]
TEA_RULES = REPO / "rules" / "tea-shop"
TEA_EVENTS = TEA_RULES / "events.jsonl"
TEA_UNTIL = "2026-12-31T00:00:00"
CDNOW_UNTIL = "1997-06-01T00:00:00"
CDNOW_LINES = 2_500
TIGHTER_CAP = ("max: 1, per: 7d", "max: 1, per: 30d")  # the CDNOW cap, stricter: it bites more often


def invoke(*args):
    """`rulecrm ARGS` in this process; the result's stdout and stderr are kept apart."""
    context = CliContext(manager=plugins.build_plugin_manager(load_entry_points=False))
    return CliRunner().invoke(main, [str(arg) for arg in args], obj=context)


@pytest.fixture(scope="session")
def cdnow_events(tmp_path_factory):
    return write_cdnow_head(tmp_path_factory.mktemp("cdnow") / "head.jsonl", CDNOW_LINES)


@pytest.fixture(scope="session")
def tight_rules(tmp_path_factory):
    return edited_cdnow_rules(tmp_path_factory.mktemp("rules") / "tight", *TIGHTER_CAP)
