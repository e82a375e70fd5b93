"""Storage faults end every command that takes --state with one clear line and exit status 1.

A damaged or foreign state file, a full disk, a file size limit, a read-only file system: never a
traceback, never exit 0, never a write to a file that is not sound, and what was committed before
the fault is still there afterwards.

How the faults are made, in real processes:

* Damaged files are real files: not SQLite, a garbled header, truncated, garbage over pages in the
  middle, a newer schema, and stored values that are not the JSON rulecrm wrote.
* Disk full: a tmpfs of a few megabytes in a private mount namespace (`unshare`), so writes fail
  with ENOSPC. Where this machine allows no namespace, SQLite's own limit on the database's pages
  (`PRAGMA max_page_count`, set by a wrapper around the command) makes it fail with SQLITE_FULL,
  the error a full disk gives.
* A file size limit (`RLIMIT_FSIZE`, SIGXFSZ ignored): writes past it fail with EFBIG.
* Read-only: a read-only bind mount in a private mount namespace (EROFS). Without namespaces the
  state and its directory lose their write permission and the command runs as an unprivileged user
  (root ignores permission bits), so SQLite has to open the file read-only, as on a read-only disk.
* An output file on a full disk: /dev/full.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import rulecrm

from rulecrm.errors import StorageError
from rulecrm.state.store import Store, storage_fault

pytestmark = pytest.mark.slow  # real processes on damaged, full and read-only storage

RULES = """
shop: {timezone: UTC}
channels:
  out: {type: jsonl, path: sends.jsonl}
rules:
  - id: thanks
    on: order.placed
    notify: {to: customer, channel: out, kind: service, template: "thanks {customer.id}"}
  - id: follow-up
    on: order.placed
    after: 1d
    notify: {to: customer, channel: out, kind: service, template: "how was it?"}
"""


def write_events(path, count, *, first=0, customers=500, bad_line=False):
    with open(path, "w", encoding="utf-8") as handle:
        for n in range(first, first + count):
            handle.write(json.dumps({
                "id": f"o-{n}", "type": "order.placed", "customer_id": f"c-{n % customers}",
                "at": f"2026-03-{1 + n // 3600 % 28:02d}T{n // 60 % 24:02d}:{n % 60:02d}:00Z",
                "data": {"sku": "tea", "amount": 1},
            }) + "\n")
        if bad_line:
            handle.write("not json\n")


def one_error_line(done):
    """The command failed with exit 1 and one error line, its last on stderr, which it returns.

    (`run` says "running: ..." once it has started; a fault after that still ends in one line.)
    """
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], done.stderr
    assert all(line.startswith(("running: ", "note: ")) for line in lines[:-1]), done.stderr
    return lines[-1]


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def count(state, table):
    with contextlib.closing(sqlite3.connect(state)) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def final_actions(state):
    with contextlib.closing(sqlite3.connect(state)) as db:
        return sorted(db.execute("SELECT key, status, due_at, sent_at, json FROM actions"))


def commands(state):
    """Every command that takes --state (run from the shop directory)."""
    return {
        "replay": ["replay", "--rules", "rules.yaml", "--events", "events.jsonl", "--state", state, "--out", "-"],
        "run": ["run", "--rules", "rules.yaml", "--state", state, "--source", "jsonl:events.jsonl", "--once"],
        "dead-letters": ["dead-letters", "--state", state],
        "dead-letters --retry": ["dead-letters", "--state", state, "--retry", "--rules", "rules.yaml"],
        "dead-letters --remove": ["dead-letters", "--state", state, "--remove", "1"],
        "explain": ["explain", "--rules", "rules.yaml", "--state", state, "--customer", "c-1"],
    }


@pytest.fixture(scope="module")
def good_state(tmp_path_factory):
    """A shop directory with a state written by a replay: profiles, timers, actions and a dead letter."""
    shop = tmp_path_factory.mktemp("shop")
    (shop / "rules.yaml").write_text(RULES)
    write_events(shop / "events.jsonl", 600, bad_line=True)
    done = rulecrm("replay", "--rules", "rules.yaml", "--events", "events.jsonl", "--state", "good.db",
                   "--out", os.devnull, cwd=shop)
    assert done.returncode == 3, done.stderr  # 3: the bad line went to the dead-letter store
    return shop


def _garbage_in_the_middle(path):
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2 // 4096 * 4096)
        handle.write(random.Random(1).randbytes(8192))


def _newer_schema(path):
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        db.commit()


DAMAGES = {
    "not an SQLite file": (lambda p: p.write_text("customer,amount\nc-1,5\n" * 200),
                           "is not a rulecrm state file, or its header is damaged"),
    "garbled header": (lambda p: _overwrite(p, 0, b"garbage!" * 2),
                       "is not a rulecrm state file, or its header is damaged"),
    "truncated": (lambda p: os.truncate(p, p.stat().st_size // 2), "is damaged"),
    "garbage over pages in the middle": (_garbage_in_the_middle, "is damaged"),
    "newer schema": (_newer_schema, "has schema version 99, newer than this rulecrm understands"),
}


def _overwrite(path, offset, data):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_state_is_one_clear_line_for_every_command_and_is_not_written(good_state, tmp_path, damage):
    make, expected = DAMAGES[damage]
    shop = tmp_path
    for name in ("rules.yaml", "events.jsonl"):
        shutil.copy(good_state / name, shop / name)
    shutil.copy(good_state / "good.db", shop / "state.db")
    make(shop / "state.db")
    before = digest(shop / "state.db")
    for command, args in commands("state.db").items():
        line = one_error_line(rulecrm(*args, cwd=shop))
        assert "state.db" in line and expected in line, (command, line)
        assert digest(shop / "state.db") == before, command  # nothing was written to it


def test_a_stored_value_that_is_not_json_is_a_damaged_state(good_state, tmp_path):
    """Garbage inside a record passes SQLite's structural check; reading it back still must not crash."""
    shop = tmp_path
    for name in ("rules.yaml", "events.jsonl"):
        shutil.copy(good_state / name, shop / name)
    shutil.copy(good_state / "good.db", shop / "state.db")
    with contextlib.closing(sqlite3.connect(shop / "state.db")) as db:
        db.execute("UPDATE profiles SET json = substr(json, 1, 20) WHERE customer_id = 'c-1'")
        db.execute("UPDATE profiles SET json = X'00ff17' WHERE customer_id = 'c-2'")
        db.execute("UPDATE events SET json = '{\"type\": \"order.pl' WHERE customer_id = 'c-3'")
        db.commit()
    explained = one_error_line(rulecrm(*commands("state.db")["explain"], cwd=shop))
    assert "state state.db is damaged (a stored value is not JSON" in explained
    explained = one_error_line(rulecrm("explain", "--rules", "rules.yaml", "--state", "state.db", "--customer", "c-3",
                                       cwd=shop))
    assert "state state.db is damaged (a stored value is not JSON" in explained
    write_events(shop / "more.jsonl", 2, first=1001, customers=1000)  # new orders of c-1 and c-2
    replayed = one_error_line(rulecrm("replay", "--rules", "rules.yaml", "--events", "more.jsonl", "--state",
                                      "state.db", "--out", os.devnull, cwd=shop))
    assert "state state.db is damaged (a stored value is" in replayed
    with Store.open(str(shop / "state.db")) as store:
        with pytest.raises(StorageError, match="is bytes, not JSON text") as raised:
            store.get_profile("c-2")
        assert raised.value.kind == "damaged"


# -- disk full ---------------------------------------------------------------------------------


@functools.cache
def namespace_prefix():
    """The `unshare` prefix that gives a private mount namespace where this process may mount (as
    root, or as an unprivileged user through a user namespace), or None when this machine has none."""
    probe = tempfile.mkdtemp()
    try:
        for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
            try:
                done = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                                      capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                return None
            if done.returncode == 0:
                return prefix
        return None
    finally:
        os.rmdir(probe)


# The replay command with smaller transactions (a test of a tenth of the size, same logic), and
# with MAX_PAGES set, a database that is "full" at that many pages.
_REPLAY = """
import os, sqlite3, sys
import rulecrm.app.replay
rulecrm.app.replay.BATCH = int(os.environ["BATCH"])
connect = sqlite3.connect
def limited(target, *args, **kwargs):
    db = connect(target, *args, **kwargs)
    if "MAX_PAGES" in os.environ and os.path.basename(str(target)) == "s.db":
        db.execute("PRAGMA max_page_count = " + os.environ["MAX_PAGES"])
    return db
sqlite3.connect = limited
sys.argv = ["rulecrm", "replay", *sys.argv[1:]]
from rulecrm.__main__ import main
main()
"""
SMALL_BATCH = 2000


def replay_in_batches(*args, cwd, prefix=(), **env):
    return subprocess.run([*prefix, sys.executable, "-c", _REPLAY, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "BATCH": str(SMALL_BATCH), **env}, timeout=300)


def pages(state):
    with contextlib.closing(sqlite3.connect(state)) as db:
        return db.execute("PRAGMA page_count").fetchone()[0]


def replay_on_a_full_disk(tmp_path, clean_first_batch, clean_all):
    """Replay events.jsonl into failed/s.db on a disk that fills up after the first batch."""
    failed = tmp_path / "failed"
    failed.mkdir()
    args = ["--rules", "rules.yaml", "--events", "events.jsonl", "--out", os.devnull, "--backend", "python"]
    prefix = namespace_prefix()
    if prefix is not None:
        # Room for the first batch in the write-ahead log (about the size of that state), not for more.
        size = (clean_first_batch.stat().st_size * 6 // 5 // 4096 + 1) * 4096
        disk = tmp_path / "disk"
        disk.mkdir()
        script = (f'mount -t tmpfs -o size={size} tmpfs "{disk}" || exit 99; "$@" --state "{disk}/s.db"; '
                  f'status=$?; cp "{disk}"/s.db* "{failed}"/; exit $status')
        done = replay_in_batches(*args, cwd=tmp_path, prefix=[*prefix, "sh", "-c", script, "sh"])
        assert done.returncode != 99, done.stderr
        return done, f"{disk}/s.db"
    limit = pages(clean_first_batch) + (pages(clean_all) - pages(clean_first_batch)) // 2
    done = replay_in_batches(*args, "--state", "failed/s.db", cwd=tmp_path, MAX_PAGES=str(limit))
    return done, "failed/s.db"


def test_a_full_disk_mid_replay_keeps_every_committed_batch_and_a_rerun_completes(tmp_path):
    (tmp_path / "rules.yaml").write_text(RULES)
    total = SMALL_BATCH + SMALL_BATCH // 4  # two transactions: a whole batch, then a quarter of one
    write_events(tmp_path / "events.jsonl", total)
    write_events(tmp_path / "first.jsonl", SMALL_BATCH)
    for events, state in (("events.jsonl", "clean.db"), ("first.jsonl", "first.db")):
        done = replay_in_batches("--rules", "rules.yaml", "--events", events, "--state", state, "--out",
                                 os.devnull, "--backend", "python", cwd=tmp_path)
        assert done.returncode == 0, done.stderr

    done, shown = replay_on_a_full_disk(tmp_path, tmp_path / "first.db", tmp_path / "clean.db")
    line = one_error_line(done)
    assert line.startswith(f"error: cannot write state {shown}: the disk is full")
    assert "free some space and run the command again" in line
    # the first batch was committed before the disk filled up: all of it is there, and nothing more
    state = tmp_path / "failed" / "s.db"
    assert count(state, "events") == SMALL_BATCH
    with Store.open(str(state)) as store:
        assert store.get_profile("c-1") is not None

    rerun = replay_in_batches("--rules", "rules.yaml", "--events", "events.jsonl", "--state", state,
                              "--out", os.devnull, "--backend", "python", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"applied {total - SMALL_BATCH}, duplicates {SMALL_BATCH}" in rerun.stderr
    assert final_actions(state) == final_actions(tmp_path / "clean.db")


def _file_size_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process at the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_file_size_limit_is_one_clear_line_and_keeps_what_was_committed(good_state, tmp_path):
    shop = tmp_path
    shutil.copy(good_state / "rules.yaml", shop / "rules.yaml")
    shutil.copy(good_state / "good.db", shop / "state.db")
    before = count(shop / "state.db", "events")
    write_events(shop / "events.jsonl", 3000, first=10_000)
    for command in ("replay", "run"):
        done = rulecrm(*commands("state.db")[command], cwd=shop, preexec_fn=_file_size_limit(128 * 1024))
        line = one_error_line(done)
        assert line.startswith("error: cannot read or write state state.db: disk I/O error"), line
        assert "a file size limit was reached" in line
        assert count(shop / "state.db", "events") == before


def test_an_output_file_on_a_full_disk_is_one_clear_line(good_state, tmp_path):
    shutil.copy(good_state / "rules.yaml", tmp_path / "rules.yaml")
    write_events(tmp_path / "events.jsonl", 50)
    done = rulecrm("replay", "--rules", "rules.yaml", "--events", "events.jsonl", "--out", "/dev/full", cwd=tmp_path)
    line = one_error_line(done)
    assert "No space left on device; free some space and run again" in line


def test_sqlite_full_in_a_transaction_rolls_it_back_and_keeps_what_was_committed(tmp_path):
    path = str(tmp_path / "s.db")
    with Store.open(path) as store:
        store.put_profiles([("kept", {"v": 1})])
        store._db.execute(f"PRAGMA max_page_count = {pages(path) + 2}")
        with pytest.raises(StorageError) as raised:
            with store.transaction():
                store.put_profiles([("lost", {"v": 2})])
                store.put_profiles((f"c-{n}", {"text": "x" * 2000}) for n in range(100))
        assert raised.value.kind == "full"
        assert str(raised.value).startswith(f"cannot write state {path}: the disk is full (database or disk is full)")
        assert store.get_profile("kept") == {"v": 1} and store.get_profile("lost") is None
        store.put_profiles([("after", {"v": 3})])  # the store is usable again once there is room
    with Store.open(path) as store:
        assert store.get_profile("after") == {"v": 3}


@pytest.mark.parametrize(("code", "kind", "words"), [
    (errno.ENOSPC, "full", "the disk is full"),
    (errno.EFBIG, "full", "the disk is full"),
    (errno.EROFS, "readonly", "is read-only"),
    (errno.EIO, "io", "cannot read or write state"),
])
def test_file_system_errors_map_to_one_kind_and_line(tmp_path, code, kind, words):
    fault = storage_fault(str(tmp_path / "s.db"), OSError(code, os.strerror(code)))
    assert fault.kind == kind and words in str(fault) and "\n" not in str(fault)


# -- read-only ---------------------------------------------------------------------------------


def _without_permission_override():
    """Runs in the child before exec: root keeps its uid but loses the capabilities that let it ignore
    permission bits (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), for good (bounding set)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_state_is_one_clear_line_for_every_command_and_is_not_written(good_state, tmp_path):
    shop = tmp_path
    for name in ("rules.yaml", "events.jsonl"):
        shutil.copy(good_state / name, shop / name)
    (shop / "ro").mkdir()
    shutil.copy(good_state / "good.db", shop / "ro" / "state.db")
    before = digest(shop / "ro" / "state.db")
    try:
        for command, done in _run_on_read_only(shop, commands("ro/state.db")).items():
            line = one_error_line(done)
            assert line.startswith("error: state ro/state.db is read-only ("), (command, line)
            assert "make the file and its directory writable" in line
    finally:
        os.chmod(shop / "ro", stat.S_IRWXU)
    assert digest(shop / "ro" / "state.db") == before
    assert sorted(os.listdir(shop / "ro")) == ["state.db"]


def _run_on_read_only(shop, argv_by_command):
    prefix = namespace_prefix()
    if prefix is not None:  # a real read-only file system: EROFS
        results = {}
        for command, argv in argv_by_command.items():
            script = (f'mount --bind ro ro && mount -o remount,bind,ro ro || exit 99; '
                      f'exec "{sys.executable}" -m rulecrm "$@"')
            results[command] = subprocess.run([*prefix, "sh", "-c", script, "sh", *argv], capture_output=True,
                                              text=True, cwd=shop, timeout=300)
            assert results[command].returncode != 99, results[command].stderr
        return results
    # no namespaces: no write permission, and (for root) no capability to ignore it
    os.chmod(shop / "ro" / "state.db", 0o444)
    os.chmod(shop / "ro", 0o555)
    preexec = _without_permission_override if os.geteuid() == 0 else None
    return {command: rulecrm(*argv, cwd=shop, preexec_fn=preexec) for command, argv in argv_by_command.items()}
