"""The first lines of the real CDNOW history as events, and copies of the CDNOW rules with one change."""
from __future__ import annotations

import io
import itertools
from pathlib import Path

from bench.datasets import cdnow_events

REPO = Path(__file__).resolve().parents[1]
CDNOW_RULES = REPO / "rules" / "cdnow"


def write_cdnow_head(path: Path, lines: int) -> Path:
    """The first `lines` purchases of CDNOW_master.txt as order.placed events in `path`."""
    with open(REPO / "tests" / "data" / "cdnow" / "CDNOW_master.txt", encoding="ascii") as source:
        head = "".join(itertools.islice(source, lines + 1))
    cdnow_events(io.StringIO(head), path)
    return path


def edited_cdnow_rules(directory: Path, old: str, new: str) -> Path:
    """A copy of rules/cdnow in `directory` with the text `old` replaced by `new` (which must be there once)."""
    text = (CDNOW_RULES / "cdnow.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in rules/cdnow/cdnow.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cdnow.yaml").write_text(text.replace(old, new), encoding="utf-8")
    return directory
