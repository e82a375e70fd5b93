"""The partitioned state: stable routing of customers to shards, the manifest and its checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from rulecrm.errors import StateError, StorageError
from rulecrm.state.partitioned import MANIFEST, PartitionedState, is_partitioned, shard_of

# Computed once with blake2b-64-mod and written down: a change of the hash (which would move every
# customer of an existing state to another shard) fails here.
GOLDEN = {
    "alice": {2: 1, 7: 2, 16: 9, 1000: 729},
    "bob": {2: 0, 7: 0, 16: 2, 1000: 842},
    "c-00042": {2: 1, 7: 6, 16: 11, 1000: 323},
    "客户-七": {2: 1, 7: 1, 16: 13, 1000: 253},
    "Zoë": {2: 0, 7: 6, 16: 10, 1000: 922},
    "": {2: 0, 7: 0, 16: 4, 1000: 876},
    "\ud800x": {2: 0, 7: 5, 16: 8, 1000: 728},  # a lone surrogate hashes too (surrogatepass)
}


def test_shard_of_gives_the_recorded_values():
    for customer_id, expected in GOLDEN.items():
        assert {n: shard_of(customer_id, n) for n in expected} == expected, customer_id
        assert shard_of(customer_id, 1) == 0


def test_shard_of_is_the_same_in_another_process_with_another_hash_seed():
    program = ("import json, sys; from rulecrm.state.partitioned import shard_of; "
               "ids = json.loads(sys.stdin.read()); "
               "print(json.dumps({c: {n: shard_of(c, n) for n in (2, 7, 16, 1000)} for c in ids}))")
    ids = [c for c in GOLDEN if c != "\ud800x"]  # JSON through a pipe cannot carry a lone surrogate
    for seed in ("0", "12345"):
        done = subprocess.run([sys.executable, "-c", program], input=json.dumps(ids), capture_output=True,
                              text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        found = {c: {int(n): s for n, s in shards.items()} for c, shards in json.loads(done.stdout).items()}
        assert found == {c: GOLDEN[c] for c in ids}


def test_shard_of_spreads_customers_evenly():
    partitions, customers = 8, 40_000
    counts = Counter(shard_of(f"customer-{i}", partitions) for i in range(customers))
    assert set(counts) == set(range(partitions))
    expected = customers / partitions
    assert all(abs(count - expected) < 0.05 * expected for count in counts.values()), counts


def test_create_writes_a_manifest_that_open_reads(tmp_path):
    path = tmp_path / "state"
    created = PartitionedState.create(path, 4)
    assert is_partitioned(path)
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest == {"format": "rulecrm-partitioned-state", "format_version": 1, "partitions": 4,
                        "hash": "blake2b-64-mod"}
    opened = PartitionedState.open(path)
    assert opened == created == PartitionedState(str(path), 4)
    assert PartitionedState.open(path, 4) == opened
    assert PartitionedState.create(path, 4) == opened  # an existing state with the same number is opened
    assert opened.shard_paths() == [str(path / f"shard-000{i}.db") for i in range(4)]
    assert opened.shard_for("alice") == shard_of("alice", 4)


def test_create_accepts_an_empty_directory_and_refuses_other_contents(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert PartitionedState.create(empty, 2).partitions == 2
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("x")
    with pytest.raises(StateError, match="neither empty nor a partitioned state"):
        PartitionedState.create(busy, 2)
    plain = tmp_path / "state.db"
    plain.write_bytes(b"")
    with pytest.raises(StateError, match="is a file"):
        PartitionedState.create(plain, 2)
    assert not is_partitioned(plain)


def test_another_number_of_partitions_is_refused_with_the_states_number(tmp_path):
    path = tmp_path / "state"
    PartitionedState.create(path, 4)
    for attempt in (lambda: PartitionedState.open(path, 3), lambda: PartitionedState.create(path, 3)):
        with pytest.raises(StateError) as caught:
            attempt()
        message = str(caught.value)
        assert "has 4 partitions, not 3" in message and "--partitions 4" in message
        assert "\n" not in message


def test_shard_paths_have_four_digits(tmp_path):
    state = PartitionedState.create(tmp_path / "s", 12)
    assert os.path.basename(state.shard_path(11)) == "shard-0011.db"
    with pytest.raises(ValueError):
        state.shard_path(12)


@pytest.mark.parametrize("text, error, words", [
    ("{not json", StorageError, "is damaged"),
    ('{"format": "something-else", "format_version": 1, "partitions": 2, "hash": "blake2b-64-mod"}',
     StorageError, "not a rulecrm manifest"),
    ('{"format": "rulecrm-partitioned-state", "format_version": 9, "partitions": 2, "hash": "blake2b-64-mod"}',
     StateError, "format version 9"),
    ('{"format": "rulecrm-partitioned-state", "format_version": 1, "partitions": 2, "hash": "md5-mod"}',
     StateError, "hash 'md5-mod'"),
    ('{"format": "rulecrm-partitioned-state", "format_version": 1, "partitions": 0, "hash": "blake2b-64-mod"}',
     StorageError, "partitions is 0"),
])
def test_a_damaged_or_unknown_manifest_is_refused_in_one_line(tmp_path, text, error, words):
    path = tmp_path / "state"
    path.mkdir()
    (path / MANIFEST).write_text(text)
    with pytest.raises(error) as caught:
        PartitionedState.open(path)
    assert words in str(caught.value) and "\n" not in str(caught.value)
