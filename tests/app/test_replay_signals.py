"""A replay stopped by SIGTERM or Ctrl-C: one line, no traceback, no temporary files, and a rerun finishes it."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real replay processes, stopped by signals

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "tea-shop"


def write_events(path: Path, count: int) -> None:
    """Unsorted (so the external sort runs too): orders of many customers over a year."""
    with open(path, "w", encoding="utf-8") as out:
        for n in range(count):
            day = (n * 7919) % 360
            out.write(json.dumps({
                "id": f"o-{n}", "type": "order.placed", "customer_id": f"c-{n % 5000}",
                "at": "2026-01-01T08:00:00+08:00" if day == 0 else
                      f"2026-{1 + day // 30:02d}-{1 + day % 28:02d}T{8 + n % 12:02d}:00:00+08:00",
                "data": {"order_id": f"o-{n}", "sku": "tea-lj", "category": "tea", "amount": 88.0},
            }) + "\n")


def replay(events, state, out, tmpdir):
    return subprocess.Popen(
        [sys.executable, "-m", "rulecrm", "replay", "--rules", str(RULES), "--events", str(events),
         "--state", str(state), "--out", str(out), "--backend", "python"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmpdir)},
    )


def committed_events(state) -> int:
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.Error:
        return 0


def actions(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_replay_keeps_its_batches_leaves_no_temporary_files_and_resumes(tmp_path, sig):
    events = tmp_path / "events.jsonl"
    write_events(events, 50_000)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    clean = replay(events, tmp_path / "clean.db", tmp_path / "clean.jsonl", tmpdir)
    assert clean.wait(timeout=600) == 0, clean.stderr.read()

    first = replay(events, tmp_path / "state.db", tmp_path / "first.jsonl", tmpdir)
    deadline = time.monotonic() + 300
    while committed_events(tmp_path / "state.db") == 0 and first.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(sig)  # during the second batch
    _stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 1, stderr
    assert "replay stopped by a signal before the end" in stderr and "Traceback" not in stderr
    assert list(tmpdir.iterdir()) == []  # sort runs and scratch files removed
    assert 0 < committed_events(tmp_path / "state.db") < 50_000

    second = replay(events, tmp_path / "state.db", tmp_path / "second.jsonl", tmpdir)
    assert second.wait(timeout=600) == 0, second.stderr.read()
    assert actions(tmp_path / "first.jsonl") + actions(tmp_path / "second.jsonl") == actions(tmp_path / "clean.jsonl")
    assert list(tmpdir.iterdir()) == []
