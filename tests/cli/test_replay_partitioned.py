"""`rulecrm replay --partitions N [--workers K]` as a real process: output, state, refusals, failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import rulecrm

from rulecrm.state.partitioned import PartitionedState

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "tea-shop"
EVENTS = RULES / "events.jsonl"
UNTIL = "2026-12-31T00:00:00"


def actions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def replay(*options, tmp_path, out=None):
    """`rulecrm replay` of the tea shop, with its own TMPDIR (to see that nothing is left there)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return rulecrm("replay", "--rules", RULES, "--events", EVENTS, "--until", UNTIL, "--backend", "python",
                   "--out", out or "-", *options, env=env)


@pytest.fixture(scope="module")
def single_sorted(tmp_path_factory):
    """A single replay's actions stably sorted by customer id: the order of a partitioned replay."""
    tmp_path = tmp_path_factory.mktemp("single")
    out = tmp_path / "actions.jsonl"
    done = replay(tmp_path=tmp_path, out=out)
    assert done.returncode == 0, done.stderr
    return sorted(actions(out), key=lambda action: action["customer_id"])


def test_partitions_give_a_single_replays_actions_in_customer_order(tmp_path, single_sorted):
    out = tmp_path / "actions.jsonl"
    done = replay("--partitions", 3, tmp_path=tmp_path, out=out)
    assert done.returncode == 0, done.stderr
    assert actions(out) == single_sorted
    assert "applied 17, duplicates 0, rejected 0" in done.stderr
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary state is gone


def test_a_partitioned_state_keeps_its_number_and_a_second_replay_outputs_nothing(tmp_path):
    state = tmp_path / "state"
    first = replay("--partitions", 2, "--state", state, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert PartitionedState.open(state).partitions == 2
    again = replay("--state", state, tmp_path=tmp_path)  # the directory brings its number of partitions
    assert again.returncode == 0, again.stderr
    assert again.stdout == "" and "applied 0, duplicates 17" in again.stderr
    other = replay("--partitions", 3, "--state", state, tmp_path=tmp_path)
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1].startswith(f"error: state {state} has 2 partitions, not 3")
    assert "Traceback" not in other.stderr


def test_partitions_with_a_state_file_are_refused(tmp_path):
    plain = tmp_path / "shop.db"
    assert replay("--state", plain, tmp_path=tmp_path).returncode == 0
    done = replay("--partitions", 2, "--state", plain, tmp_path=tmp_path)
    assert done.returncode == 1
    assert f"error: --state {plain} is a state file (one partition)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("options, message", [
    (("--workers", 2, "--scheduler", "tcp://127.0.0.1:1"), "not both"),
    (("--scheduler", "tcp://127.0.0.1:1", "--partitions", 2), "--scheduler needs --state"),
    (("--workers", 2), "need --partitions N"),
    (("--partitions", 2, "--dispatch"), "--dispatch delivers from one state"),
])
def test_options_that_cannot_go_together_are_refused(tmp_path, options, message):
    done = replay(*options, tmp_path=tmp_path)
    assert done.returncode in (1, 2) and message in done.stderr and "Traceback" not in done.stderr


def test_rejected_lines_are_reported_with_their_line_numbers_in_the_input(tmp_path):
    events = tmp_path / "events.jsonl"
    lines = EVENTS.read_text(encoding="utf-8").splitlines()
    lines[4:4] = ["not json", '{"type": "order.placed", "customer_id": "c-9", "at": "yesterday"}']
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = rulecrm("replay", "--rules", RULES, "--events", events, "--partitions", 2, "--backend", "python",
                   "--state", tmp_path / "state")
    assert done.returncode == 3, done.stderr
    rejected = [line for line in done.stderr.splitlines() if ": rejected: " in line]
    assert [line.split(": rejected: ")[0] for line in rejected] == [f"{events}:5", f"{events}:6"]


@pytest.mark.parametrize("where", [
    (), pytest.param(("--workers", 2), marks=pytest.mark.slow),
], ids=["in-process", "local-cluster"])
def test_a_failing_partition_fails_the_run_in_one_line_and_leaves_no_work_directory(tmp_path, where):
    state = tmp_path / "state"
    assert replay("--partitions", 2, "--state", state, tmp_path=tmp_path).returncode == 0
    broken = Path(PartitionedState.open(state).shard_path(1))
    for suffix in ("-wal", "-shm"):
        Path(f"{broken}{suffix}").unlink(missing_ok=True)
    broken.write_bytes(b"this is not a database" * 200)
    done = replay("--state", state, *where, tmp_path=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: partition 1: {broken} is not a rulecrm state file")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # no traceback, no worker's log
    assert sorted(entry.name for entry in state.iterdir() if not entry.name.startswith("shard-")) == [
        "manifest.json"]


@pytest.mark.slow
def test_on_a_local_cluster_of_two_workers(tmp_path, single_sorted):
    pytest.importorskip("distributed")
    out = tmp_path / "actions.jsonl"
    state = tmp_path / "state"
    done = replay("--partitions", 2, "--workers", 2, "--state", state, tmp_path=tmp_path, out=out)
    assert done.returncode == 0, done.stderr
    assert actions(out) == single_sorted
    assert "Traceback" not in done.stderr
    assert sorted(entry.name for entry in state.iterdir()) == ["manifest.json", "shard-0000.db", "shard-0001.db"]
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
def test_on_an_existing_cluster_given_by_its_scheduler(tmp_path, single_sorted):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "actions.jsonl"
    import dask.config

    with dask.config.set({"temporary-directory": str(tmp_path / "dask")}), distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
            dashboard_address=None) as cluster:
        done = replay("--partitions", 2, "--scheduler", cluster.scheduler_address, "--state", tmp_path / "state",
                      tmp_path=tmp_path, out=out)
        assert done.returncode == 0, done.stderr
        assert list(cluster.scheduler.workers)  # the cluster is still there: only its client was closed
    assert actions(out) == single_sorted


def test_without_dask_partitions_run_in_process_and_workers_say_what_to_install(tmp_path, single_sorted):
    program = ("import runpy, sys; sys.modules['dask'] = sys.modules['distributed'] = None; "
               "sys.argv[0] = 'rulecrm'; runpy.run_module('rulecrm', run_name='__main__')")
    common = ["replay", "--rules", str(RULES), "--events", str(EVENTS), "--until", UNTIL, "--backend", "python"]
    out = tmp_path / "actions.jsonl"
    done = subprocess.run([sys.executable, "-c", program, *common, "--partitions", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert actions(out) == single_sorted
    done = subprocess.run([sys.executable, "-c", program, *common, "--partitions", "2", "--workers", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "error: --workers and --scheduler need Dask: pip install 'rulecrm[dask]'" in done.stderr
