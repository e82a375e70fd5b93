"""bench_instructions runs each contender's replay under valgrind and reports instructions per event.

valgrind itself is stood in for by a script that runs the command it is given and reports a count
made from the events file (1,000 instructions per event, 5,000 for start-up): the replay script the
bench hands it must still run for real, for the hand-written loop, both backends and the parts of `--parts`.
"""
from __future__ import annotations

import os
import stat
import sys

import pytest

from bench import bench_instructions
from tests.cdnow_head import write_cdnow_head

FAKE_VALGRIND = f"""#!{sys.executable}
import subprocess, sys
command = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
completed = subprocess.run(command)
with open(command[-2], encoding="utf-8") as events:  # the events file, before the rules
    count = 5_000 + 1_000 * sum(1 for _ in events)
print(f"==1== I   refs:      {{count:,}}", file=sys.stderr)
sys.exit(completed.returncode)
"""


@pytest.fixture
def fake_valgrind(tmp_path, monkeypatch):
    path = tmp_path / "bin" / "valgrind"
    path.parent.mkdir()
    path.write_text(FAKE_VALGRIND, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{path.parent}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("contender", ["handwritten", "python", "durable", "reader", "unwritten"])
def test_instructions_per_event_leave_start_up_out(fake_valgrind, tmp_path, contender):
    many = write_cdnow_head(tmp_path / "many.jsonl", 40)
    one = write_cdnow_head(tmp_path / "one.jsonl", 1)
    assert bench_instructions.per_event(contender, bench_instructions.ROOT, many, one) == 1_000


def test_a_replay_that_fails_under_valgrind_is_reported(fake_valgrind, tmp_path):
    with pytest.raises(RuntimeError, match="python under valgrind failed"):
        bench_instructions.instructions("python", tmp_path / "no-such-file.jsonl", bench_instructions.ROOT)
