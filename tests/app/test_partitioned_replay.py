"""A partitioned replay decides exactly what a single replay decides, merged in customer order.

The phases run in this process here, and on a real Dask LocalCluster of worker processes in the
tests marked slow; the state's shards and the part files are real SQLite files.
"""
from __future__ import annotations

import io
import itertools
import json
import os
import sqlite3
from pathlib import Path

import pytest

from bench.datasets import cdnow_events
from rulecrm.app import splitting
from rulecrm.app.partitioned_replay import WORK_PREFIX, InProcessTasks, PartitionFailed, replay_partitioned
from rulecrm.app.replay import replay
from rulecrm.app.splitting import plan_blocks, read_pieces, split_block
from rulecrm.app.stopping import Interrupted
from rulecrm.errors import StateError, UsageError
from rulecrm.state.partitioned import PartitionedState, shard_of
from rulecrm.timeutil import get_zone, parse_timestamp

REPO = Path(__file__).resolve().parents[2]
TEA_SHOP = REPO / "rules" / "tea-shop"
CDNOW_RULES = REPO / "rules" / "cdnow"
CDNOW_LINES = 12_000  # a prefix of the real data: every customer of it with their whole history
TEA_UNTIL = parse_timestamp("2026-12-31T00:00:00", get_zone("Asia/Shanghai"))

FOLLOW_UP = """
shop: {timezone: UTC}
rules:
  - id: follow-up
    on: order.placed
    after: 2d
    notify: {to: customer, kind: service, template: "How was order {event.order_id}?"}
"""


@pytest.fixture(scope="module")
def cdnow_head(tmp_path_factory):
    with open(REPO / "tests" / "data" / "cdnow" / "CDNOW_master.txt", encoding="ascii") as source:
        head = "".join(itertools.islice(source, CDNOW_LINES + 1))
    path = tmp_path_factory.mktemp("cdnow") / "head.jsonl"
    cdnow_events(io.StringIO(head), path)
    return path


def single(rules, events, **options) -> list[dict]:
    """A single replay's actions, stably sorted by customer id: the partitioned replay's order."""
    out = io.StringIO()
    replay(rules, events, out=out, backend_name="python", **options)
    return sorted(map(json.loads, out.getvalue().splitlines()), key=lambda action: action["customer_id"])


def partitioned(rules, events, partitions=None, **options):
    out = io.StringIO()
    summary = replay_partitioned(rules, events, partitions=partitions, out=out, backend_name="python", **options)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def order(customer, at, order_id, **data):
    return {"id": order_id, "type": "order.placed", "customer_id": customer, "at": at,
            "data": {"order_id": order_id, "sku": "tea-lj", "category": "tea", "amount": 88.0, **data}}


def write_lines(path: Path, lines) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n"
                              for line in lines))
    return path


def customers_in_different_shards(partitions=2):
    """Two customer ids, the first in shard 0 and the second in shard 1."""
    by_shard = {}
    for n in itertools.count():
        by_shard.setdefault(shard_of(f"c-{n}", partitions), f"c-{n}")
        if len(by_shard) == partitions:
            return by_shard[0], by_shard[1]


def no_work_directory_left(state) -> bool:
    return not [entry for entry in Path(state).iterdir() if entry.name.startswith(WORK_PREFIX)]


# -- the split -----------------------------------------------------------------------------


def test_blocks_cut_anywhere_give_every_line_once_with_its_number(tmp_path, monkeypatch):
    lines = [b"\xef\xbb\xbf" + json.dumps(order("c-1", "2026-01-01T00:00:00", "o1")).encode(), b"",
             b"not json\r", b"   ", json.dumps(order(7, "2026-01-02T00:00:00", "o2")).encode(),
             b'{"customer_id": "c-\xff"}', b'{"customer_id": 123456789012345678901234567890}']
    lines += [json.dumps(order(f"c-{n}", "2026-01-03T00:00:00", f"o{n}")).encode() for n in range(40)]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines))  # no line ending after the last line
    monkeypatch.setattr(splitting, "MIN_BLOCK_BYTES", 1)
    blocks = plan_blocks(events, parallelism=13)  # cuts fall inside lines
    assert len(blocks) == 13 and blocks[0].start == 0 and blocks[-1].end == events.stat().st_size
    counts = [split_block(events, block, 3, str(tmp_path)) for block in blocks]
    assert sum(c.lines for c in counts) == len(lines)
    placed = list(zip([c.index for c in counts], itertools.accumulate([0] + [c.lines for c in counts]), strict=False))
    found = {}
    for shard in range(3):
        for line_no, text in read_pieces(str(tmp_path), placed, shard):
            found[line_no] = (shard, text)
    expected = {n: line.rstrip(b"\r").removeprefix(b"\xef\xbb\xbf") for n, line in enumerate(lines, start=1)
                if line.strip()}
    assert {n: text for n, (_shard, text) in found.items()} == expected
    assert found[3][0] == 0 and found[6][0] == 0  # not JSON, not UTF-8: shard 0
    assert found[5][0] == shard_of("7", 3)  # an integer id is read in decimal, as the event parser does
    assert found[7][0] == shard_of("123456789012345678901234567890", 3)  # beyond 64 bits too


# -- the same decisions --------------------------------------------------------------------


def test_every_customer_lives_in_the_shard_shard_of_names(tmp_path):
    state = tmp_path / "state"
    partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 3, state=str(state), until=TEA_UNTIL)
    shards = PartitionedState.open(state)
    assert shards.partitions == 3
    seen = set()
    for shard, path in enumerate(shards.shard_paths()):
        with sqlite3.connect(path) as db:
            profiles = {row[0] for row in db.execute("SELECT customer_id FROM profiles")}
            events = {row[0] for row in db.execute("SELECT customer_id FROM events")}
        assert all(shard_of(customer, 3) == shard for customer in profiles | events), (shard, profiles, events)
        seen |= events
    all_customers = {json.loads(line)["customer_id"] for line in (TEA_SHOP / "events.jsonl").read_text().splitlines()}
    assert seen == all_customers


@pytest.mark.parametrize("partitions", [1, 3])
def test_the_tea_shop_gives_a_single_replays_actions_in_customer_order(tmp_path, partitions):
    events = TEA_SHOP / "events.jsonl"
    expected = single(TEA_SHOP, events, until=TEA_UNTIL)
    assert {a["status"] for a in expected} >= {"sent", "suppressed"}  # caps, quiet hours and escalations
    actions, summary = partitioned(TEA_SHOP, events, partitions, until=TEA_UNTIL)
    assert actions == expected
    assert summary.applied == 17 and sum(summary.actions.values()) == len(expected)


def test_cdnow_gives_a_single_replays_actions_in_customer_order(tmp_path, cdnow_head):
    expected = single(CDNOW_RULES, cdnow_head)
    actions, summary = partitioned(CDNOW_RULES, cdnow_head, 3, state=str(tmp_path / "state"))
    assert len(actions) == len(expected) > 10_000
    assert actions == expected
    assert summary.events == summary.applied == CDNOW_LINES


def test_a_partition_whose_last_event_is_earlier_still_fires_timers_up_to_the_inputs_end(tmp_path):
    early, late = customers_in_different_shards()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(FOLLOW_UP)
    events = write_lines(tmp_path / "events.jsonl", [
        order(early, "2026-01-01T09:00:00", "o1"),
        order(late, "2026-01-01T10:00:00", "o2"),
        order(late, "2026-01-10T10:00:00", "o3"),
    ])
    expected = single(tmp_path / "rules", events)
    actions, _summary = partitioned(tmp_path / "rules", events, 2)
    assert actions == expected
    # o1's follow-up is due on Jan 3, after the last event of its own partition
    assert [(a["customer_id"], a["message"]) for a in actions if a["customer_id"] == early] == [
        (early, "How was order o1?")]


def test_customers_are_merged_in_code_point_order_of_their_ids(tmp_path):
    ids = ["é", "Z", "a", "B", "😀", "ｚ", "a-2", "A", "10", "9", "客户"]
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(FOLLOW_UP)
    events = write_lines(tmp_path / "events.jsonl", [
        order(customer, f"2026-01-{1 + n % 9:02d}T09:00:00", f"o{n}") for n, customer in enumerate(ids * 2)])
    actions, _summary = partitioned(tmp_path / "rules", events, 4)
    assert actions == single(tmp_path / "rules", events)
    merged = [a["customer_id"] for a in actions]
    assert merged == sorted(merged) and len(set(merged)) >= 8  # Python compares strings by code point

def test_dead_letters_keep_the_line_numbers_of_the_input(tmp_path):
    events = write_lines(tmp_path / "events.jsonl", [
        order("c-1", "2026-01-05T10:00:00", "o1"),
        b"not json",
        {"type": "order.placed", "at": "2026-01-05T10:00:00", "data": {}},
        b"",
        order("c-2", "2026-13-45T10:00:00", "o2"),
        order("c-1", "2026-01-05T10:00:00", "o1", amount=99.0),  # the id of line 1 with other content
        b'{"customer_id": "c-3", "type": "order.placed", "at": "2026-01-06T10:00:00", "x": "\xff"}',
        order("c-3", "2026-01-06T10:00:00", "o3"),
    ])
    rejected = []
    state = tmp_path / "state"
    _actions, summary = partitioned(TEA_SHOP, events, 3, state=str(state),
                                    on_rejected=lambda line_no, error: rejected.append(line_no))
    single_rejected = []
    replay(TEA_SHOP, events, state=str(tmp_path / "single.db"), backend_name="python",
           on_rejected=lambda line_no, error: single_rejected.append(line_no))
    assert rejected == sorted(single_rejected) == [2, 3, 5, 6, 7]
    assert summary.rejected == 5 and summary.exit_code == 3

    def dead_letters(paths):
        found = set()
        for path in paths:
            with sqlite3.connect(path) as db:
                found |= set(db.execute("SELECT source, line_no, raw, error FROM dead_letters"))
        return found

    in_shards = dead_letters(PartitionedState.open(state).shard_paths())
    assert in_shards == dead_letters([tmp_path / "single.db"])
    assert {(source, line_no) for source, line_no, _raw, _error in in_shards} == {
        (str(events), n) for n in (2, 3, 5, 6, 7)}


# -- the state -----------------------------------------------------------------------------


def test_a_repeated_replay_outputs_no_actions(tmp_path):
    state = str(tmp_path / "state")
    first, _summary = partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 2, state=state, until=TEA_UNTIL)
    again, summary = partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", state=state, until=TEA_UNTIL)
    assert first and again == []
    assert summary.duplicates == 17 and summary.applied == 0
    assert no_work_directory_left(state)


def test_another_number_of_partitions_or_a_state_file_is_refused(tmp_path):
    state = str(tmp_path / "state")
    partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 2, state=state)
    with pytest.raises(StateError, match="has 2 partitions, not 3"):
        partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 3, state=state)
    plain = tmp_path / "plain.db"
    replay(TEA_SHOP, TEA_SHOP / "events.jsonl", state=str(plain), backend_name="python")
    with pytest.raises(UsageError, match="is a state file"):
        partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 2, state=str(plain))


class ShardLooker(InProcessTasks):
    """Runs the phases in this process and, once the partitions are replayed, notes what their shards hold."""

    def __init__(self):
        super().__init__()
        self.shards = []

    def run(self, task, jobs, description):
        results = super().run(task, jobs, description)
        if description == "replay partitions":
            for job in jobs:
                with sqlite3.connect(job.shard_path) as db:
                    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
                    events = [text for (text,) in db.execute("SELECT json FROM events")]
                self.shards.append((indexes, events))
        return results


@pytest.mark.parametrize("kept", [False, True])
def test_temporary_shards_are_written_as_a_replay_without_state_writes_its_store(tmp_path, kept):
    """Without --state nothing can be resumed: the shards keep events by fingerprint and skip the
    indexes only explain and delivery read, as a single replay's scratch store does; a --state keeps all."""
    events = TEA_SHOP / "events.jsonl"
    expected = single(TEA_SHOP, events, until=TEA_UNTIL)
    looker = ShardLooker()
    out = io.StringIO()
    replay_partitioned(TEA_SHOP, events, partitions=2, out=out, backend_name="python", until=TEA_UNTIL,
                       tasks=looker, state=str(tmp_path / "state") if kept else None)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == expected
    assert len(looker.shards) == 2 and sum(len(events) for _indexes, events in looker.shards) == 17
    for indexes, texts in looker.shards:
        assert ("events_customer" in indexes) is kept and ("actions_customer" in indexes) is kept
        assert all(text.startswith("{") is kept for text in texts)


def test_a_failing_partition_fails_the_run_and_leaves_no_work_directory(tmp_path):
    state = tmp_path / "state"
    partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 2, state=str(state))
    broken = Path(PartitionedState.open(state).shard_path(1))
    for suffix in ("-wal", "-shm"):
        Path(f"{broken}{suffix}").unlink(missing_ok=True)
    broken.write_bytes(b"this is not a database" * 200)
    with pytest.raises(PartitionFailed) as failed:
        partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", state=str(state))
    assert str(failed.value).startswith("partition 1: ") and str(broken) in str(failed.value)
    assert no_work_directory_left(state)


def test_a_stop_ends_the_run_and_leaves_no_temporary_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    with pytest.raises(Interrupted):
        partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 2, stop=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_an_input_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="is not a regular file"):
        partitioned(TEA_SHOP, fifo, 2)


# -- on a Dask cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_cluster():
    pytest.importorskip("distributed")
    from rulecrm.app.on_dask import dask_tasks

    with dask_tasks(workers=2) as tasks:
        yield tasks


@pytest.mark.slow
def test_on_a_local_cluster_the_actions_are_those_of_a_single_replay(tmp_path, cdnow_head, local_cluster):
    assert local_cluster.parallelism == 2
    expected = single(CDNOW_RULES, cdnow_head)
    actions, summary = partitioned(CDNOW_RULES, cdnow_head, 3, state=str(tmp_path / "state"), tasks=local_cluster)
    assert actions == expected
    assert summary.events == summary.applied == CDNOW_LINES
    tea, _summary = partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 2, tasks=local_cluster, until=TEA_UNTIL)
    assert tea == single(TEA_SHOP, TEA_SHOP / "events.jsonl", until=TEA_UNTIL)


@pytest.mark.slow
def test_on_a_local_cluster_a_failing_partition_fails_the_run_in_one_line(tmp_path, local_cluster):
    state = tmp_path / "state"
    partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", 2, state=str(state), tasks=local_cluster)
    broken = Path(PartitionedState.open(state).shard_path(0))
    broken.write_bytes(b"this is not a database" * 200)
    with pytest.raises(PartitionFailed, match="^partition 0: .*not a rulecrm state file"):
        partitioned(TEA_SHOP, TEA_SHOP / "events.jsonl", state=str(state), tasks=local_cluster)
    assert no_work_directory_left(state)

