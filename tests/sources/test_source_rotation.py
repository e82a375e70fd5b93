"""The `jsonl` source follows its file like `tail -F`: rotation, copytruncate, delete and re-create, restarts.

Every test works on real files in a temporary directory: the source is told apart by identity
(st_dev, st_ino) and a fingerprint of the file's first bytes, and the position it commits carries both.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import timezone

import pytest
from helpers import write_rules

from rulecrm import plugins
from rulecrm.app.runner import Runner
from rulecrm.events import Event
from rulecrm.sources import JsonlFollowSource, SourceContext
from rulecrm.sources import jsonl as jsonl_source
from rulecrm.sources.reader import Rejected
from rulecrm.state.store import Store


def line(event_id, customer="c-1", at="2026-03-01T10:00:00Z"):
    obj = {"type": "order.placed", "customer_id": customer, "at": at, "data": {"sku": "tea", "amount": 1}}
    if event_id:
        obj["id"] = event_id
    return json.dumps(obj) + "\n"


def lines(*ids):
    return "".join(line(i) for i in ids)


class Follower:
    """A source on a state, polled like the runner polls it, committing after each poll."""

    def __init__(self, path, store=None):
        self.path = path
        self.store = store or Store.open(":memory:")
        self.messages: list[str] = []
        self.reopen()

    def reopen(self):
        """A new process on the same state (the previous one stopped, or was killed after its last commit)."""
        self.source = JsonlFollowSource(str(self.path), SourceContext(timezone.utc, on_message=self.messages.append))
        self.source.open(self.store)

    def poll(self, limit=100, commit=True):
        items = self.source.poll(limit)
        if commit:
            with self.store.transaction():
                self.source.commit(self.store)
        return items

    def ids(self, limit=100):
        return [item.id if isinstance(item, Event) else ("rejected", n) for n, item in self.poll(limit)]


def test_rename_and_replace_with_a_longer_file_reads_the_old_rest_then_the_new_file_from_its_start(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1", "a-2"))
    follower = Follower(path)
    assert follower.ids() == ["a-1", "a-2"]
    with path.open("a") as handle:  # written, not read yet, then rotated away
        handle.write(line("a-3"))
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text(lines("b-1", "b-2", "b-3", "b-4", "b-5"))  # longer than the old offset
    items = follower.poll()
    assert [(n, e.id) for n, e in items] == [(3, "a-3"), (1, "b-1"), (2, "b-2"), (3, "b-3"), (4, "b-4"), (5, "b-5")]
    assert any("rotated" in m for m in follower.messages)
    with path.open("a") as handle:
        handle.write(line("b-6"))
    assert follower.ids() == ["b-6"]


def test_the_old_file_is_kept_open_until_the_writer_has_moved_on(tmp_path):
    """Rotation between the old file's last line being written and read, with the writer still holding it."""
    path = tmp_path / "events.jsonl"
    writer = open(path, "a")
    follower = Follower(path)
    writer.write(line("a-1") + line("a-2")[:25])
    writer.flush()
    assert follower.ids() == ["a-1"]  # the second line has no newline yet
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text("")  # logrotate's `create`: the new file exists, empty, the writer has not reopened yet
    assert follower.ids() == []
    writer.write(line("a-2")[25:] + line("a-3"))  # the writer finishes on its old descriptor
    writer.flush()
    assert follower.ids() == ["a-2", "a-3"]
    writer.close()
    with path.open("a") as handle:  # the writer reopened: the new file gets data
        handle.write(line("b-1"))
    assert follower.ids() == ["b-1"]


def test_a_rotated_file_ending_without_a_newline_gives_its_last_line_once_the_writer_moved_on(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(line("a-1") + line("a-2").rstrip("\n"))
    follower = Follower(path)
    assert follower.ids() == ["a-1"]
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text(line("b-1"))
    assert follower.ids() == ["a-2", "b-1"]

    path2 = tmp_path / "other.jsonl"  # a cut line is rejected (kept as a dead letter), not dropped
    path2.write_text(line("a-1") + line("a-2")[:30])
    other = Follower(path2)
    assert other.ids() == ["a-1"]
    os.rename(path2, tmp_path / "other.jsonl.1")
    path2.write_text(line("b-1"))
    items = other.poll()
    assert isinstance(items[0][1], Rejected) and items[0][0] == 2 and items[0][1].raw == line("a-2")[:30]
    assert items[1][1].id == "b-1"


def test_copytruncate_reads_the_file_again_from_its_start(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1", "a-2", "a-3"))
    follower = Follower(path)
    assert follower.ids() == ["a-1", "a-2", "a-3"]
    shutil.copyfile(path, tmp_path / "events.jsonl.1")
    with path.open("r+") as handle:
        handle.truncate(0)
    assert follower.ids() == []
    with path.open("a") as handle:
        handle.write(line("b-1"))
    assert [(n, e.id) for n, e in follower.poll()] == [(1, "b-1")]
    assert any("truncated" in m for m in follower.messages)


def test_a_truncated_file_that_grew_past_the_old_offset_before_the_poll_is_read_from_its_start(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1", "a-2"))
    follower = Follower(path)
    assert follower.ids() == ["a-1", "a-2"]
    inode = os.stat(path).st_ino
    with path.open("r+") as handle:  # in place: same inode, then more bytes than were read
        handle.truncate(0)
        handle.write(lines("b-1", "b-2", "b-3", "b-4"))
    assert os.stat(path).st_ino == inode
    assert follower.ids() == ["b-1", "b-2", "b-3", "b-4"]


def test_a_missing_file_is_waited_for_and_a_deleted_one_for_its_successor(tmp_path):
    path = tmp_path / "events.jsonl"
    follower = Follower(path)
    assert follower.ids() == [] and follower.ids() == []
    path.write_text(line("a-1"))
    assert follower.ids() == ["a-1"]
    with path.open("a") as handle:
        handle.write(line("a-2"))
    os.unlink(path)  # deleted with a line not read yet: it is still read from the open descriptor
    assert follower.ids() == ["a-2"]
    assert follower.ids() == []
    path.write_text(lines("b-1", "b-2"))
    assert follower.ids() == ["b-1", "b-2"]


def test_a_restart_resumes_the_same_file_at_its_offset(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1", "a-2"))
    follower = Follower(path)
    assert follower.ids() == ["a-1", "a-2"]
    follower.poll()
    with path.open("a") as handle:
        handle.write(line("a-3"))
    follower.reopen()
    assert follower.ids() == ["a-3"]


def test_rotation_while_stopped_finishes_the_old_file_found_beside_the_path(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1", "a-2"))
    follower = Follower(path)
    assert follower.ids() == ["a-1", "a-2"]
    follower.source.close()  # stopped (or killed: the position was committed with the last poll)
    with path.open("a") as handle:
        handle.write(line("a-3"))
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text(lines("b-1", "b-2", "b-3"))
    follower.reopen()
    assert follower.ids() == ["a-3", "b-1", "b-2", "b-3"]
    assert any("rotated while stopped" in m for m in follower.messages)


def test_two_rotations_while_stopped_name_the_file_that_was_not_read(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1"))
    follower = Follower(path)
    assert follower.ids() == ["a-1"]
    follower.source.close()
    with path.open("a") as handle:
        handle.write(line("a-2"))
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text(lines("b-1"))
    os.rename(tmp_path / "events.jsonl.1", tmp_path / "events.jsonl.2")
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text(lines("c-1"))
    follower.reopen()
    assert follower.ids() == ["a-2", "c-1"]  # the documented limit: one rotation while stopped is followed
    assert any("rotated more than once while stopped: events.jsonl.1 " in m and "were not read" in m
               for m in follower.messages)


def test_rotation_while_stopped_without_the_old_file_starts_the_new_one_from_its_start(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1", "a-2", "a-3"))
    follower = Follower(path)
    assert follower.ids(limit=2) == ["a-1", "a-2"]
    follower.source.close()
    os.unlink(path)  # rotated away and compressed, say: the unread "a-3" cannot be found
    path.write_text(lines("b-1", "b-2", "b-3", "b-4", "b-5"))
    follower.reopen()
    assert follower.ids() == ["b-1", "b-2", "b-3", "b-4", "b-5"]
    assert any("not the one read before" in m and "after line 2 were not read" in m for m in follower.messages)


def test_a_file_rewritten_in_place_while_stopped_is_read_from_its_start(tmp_path):
    """Same inode (rewritten in place, or a reused inode), other content: the fingerprint tells them apart."""
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1", "a-2"))
    follower = Follower(path)
    assert follower.ids() == ["a-1", "a-2"]
    follower.source.close()
    with path.open("r+") as handle:
        handle.truncate(0)
        handle.write(lines("b-1", "b-2", "b-3", "b-4"))
    follower.reopen()
    assert follower.ids() == ["b-1", "b-2", "b-3", "b-4"]


def test_a_kill_before_the_commit_reads_the_same_lines_again_in_the_rotated_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1"))
    follower = Follower(path)
    assert follower.ids() == ["a-1"]
    with path.open("a") as handle:
        handle.write(line("a-2"))
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text(lines("b-1"))
    assert [e.id for _n, e in follower.poll(commit=False)] == ["a-2", "b-1"]  # then killed: nothing committed
    follower.reopen()
    assert follower.ids() == ["a-2", "b-1"]
    follower.reopen()
    assert follower.ids() == []  # committed in the new file, at its end


def test_a_position_stored_without_identity_resumes_at_its_offset(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1", "a-2", "a-3"))
    store = Store.open(":memory:")
    with store.transaction():  # as stored before identities were kept
        store.set_meta(f"source:jsonl:{path}", {"offset": len(lines("a-1", "a-2")), "line_no": 2})
    follower = Follower(path, store)
    assert [(n, e.id) for n, e in follower.poll()] == [(3, "a-3")]


def test_id_less_events_keep_their_ids_across_restarts_and_are_new_in_a_new_file(tmp_path):
    path = tmp_path / "events.jsonl"
    same = line(None)
    path.write_text(same)
    follower = Follower(path)
    first = follower.ids()
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text(same + same)
    follower.source.close()
    follower.reopen()
    second = follower.ids()
    assert len(set(first + second)) == 3  # equal lines, three events: line numbers restart, the sequence does not
    replay = Follower(tmp_path / "events.jsonl.1")  # the same file on a new state numbers its lines the same
    assert replay.ids() == first


def test_lines_that_are_not_utf8_keep_their_bytes_as_escapes(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"id": "x\xff\xfe"}\n' + line("a-1").encode())
    items = Follower(path).poll()
    rejected = items[0][1]
    assert isinstance(rejected, Rejected) and "not valid UTF-8 (byte 10" in rejected.error
    assert rejected.raw == '{"id": "x\\xff\\xfe"}'
    assert rejected.raw.encode("ascii").decode("unicode_escape").encode("latin-1") == b'{"id": "x\xff\xfe"}'
    assert items[1][1].id == "a-1"


def test_an_overlong_line_is_rejected_and_skipped_across_polls_and_restarts(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl_source, "MAX_LINE", 200)
    path = tmp_path / "events.jsonl"
    path.write_text(line("a-1") + "x" * 250)  # longer than allowed, and its newline not written yet
    follower = Follower(path)
    items = follower.poll()
    assert items[0][1].id == "a-1"
    assert isinstance(items[1][1], Rejected) and "longer than 200 bytes" in items[1][1].error
    follower.reopen()
    with path.open("a") as handle:
        handle.write("y" * 500 + "\n" + line("a-2"))
    assert [(n, e.id) for n, e in follower.poll()] == [(3, "a-2")]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_something_else_than_a_file_at_the_path_is_reported_once_and_waited_out(tmp_path, kind):
    path = tmp_path / "events.jsonl"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    follower = Follower(path)
    assert follower.ids() == [] and follower.ids() == []
    assert len(follower.messages) == 1 and "not a regular file" in follower.messages[0]
    if kind == "directory":
        path.rmdir()
    else:
        path.unlink()
    path.write_text(line("a-1"))
    assert follower.ids() == ["a-1"]


# -- with the runner ------------------------------------------------------------------------

RULES = """
shop: {timezone: UTC}
channels:
  out: {type: jsonl, path: "%s"}
rules:
  - id: thanks
    on: order.placed
    notify: {to: customer, channel: out, kind: service, template: "thanks {event.id}"}
"""


def _applied(state):
    with sqlite3.connect(state) as db:
        return sorted(row[0] for row in db.execute("SELECT id FROM events"))


def test_the_runner_follows_rotations_across_steps_and_restarts(tmp_path):
    rules = write_rules(tmp_path, RULES % (tmp_path / "sends.jsonl"))
    path, state = tmp_path / "events.jsonl", tmp_path / "state.db"
    path.write_text(lines("a-1", "a-2"))
    messages = []

    def runner():
        started = Runner(rules, str(state), sources=[f"jsonl:{path}"], manager=plugins.build_plugin_manager(
            load_entry_points=False), backend_name="python", on_message=messages.append, reload_interval=0)
        started.start()
        return started

    live = runner()
    try:
        live.run(once=True)
        with path.open("a") as handle:
            handle.write(line("a-3"))
        os.rename(path, tmp_path / "events.jsonl.1")
        path.write_text(lines("b-1", "b-2", "b-3", "b-4"))
        live.run(once=True)
        with path.open("a") as handle:
            handle.write(line("b-5"))
    finally:
        live.close()
    os.rename(tmp_path / "events.jsonl.1", tmp_path / "events.jsonl.2")  # rotated again while stopped
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_text(lines("c-1"))
    live = runner()
    try:
        live.run(once=True)
    finally:
        live.close()
    assert _applied(state) == ["a-1", "a-2", "a-3", "b-1", "b-2", "b-3", "b-4", "b-5", "c-1"]
    assert not any("rejected" in m for m in messages)


CUSTOMERS = 7


def _event(n):
    return json.dumps({"id": f"o-{n}", "type": "order.placed", "customer_id": f"c-{n % CUSTOMERS}",
                       "at": f"2026-03-01T10:{n // 60:02d}:{n % 60:02d}Z", "data": {"sku": "tea", "amount": 1}}) + "\n"


def _count(state, sql):
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return -1


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.slow
def test_kill_9_while_the_file_rotates_loses_no_line_and_applies_none_twice(tmp_path):
    """A real runner killed at seeded random moments while a writer rotates its file logrotate-style.

    Rotations happen while the runner runs and while it is down, with lines it has not read yet in the
    file rotated away. The documented limit is kept: a file is rotated only once the runner has
    committed a line of it (at most one rotation between the last commit and a restart is followed).
    """
    rng = random.Random(20260302)
    total, kills_wanted = 400, 4
    path, state, log_path = tmp_path / "events.jsonl", tmp_path / "state.db", tmp_path / "runner.log"
    rules = write_rules(tmp_path, RULES % (tmp_path / "sends.jsonl"))
    path.write_text("")
    command = [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
               "--source", f"jsonl:{path}", "--backend", "python"]
    log = open(log_path, "a", buffering=1)
    written = kills = rotations = rotations_while_down = 0
    before_current = 0  # events written to the files older than the current one

    def write_some():
        nonlocal written
        end = min(total, written + rng.randint(1, 6))
        with path.open("a") as handle:
            handle.write("".join(_event(n) for n in range(written, end)))
        written = end

    def position_in_current_file():
        return wait_until(lambda: _count(state, "SELECT count(*) FROM events") > before_current)

    def rotate():
        nonlocal rotations, before_current
        for n in range(rotations, 0, -1):  # shift .N -> .N+1, then the file -> .1 and a new empty file
            os.rename(tmp_path / f"events.jsonl.{n}", tmp_path / f"events.jsonl.{n + 1}")
        os.rename(path, tmp_path / "events.jsonl.1")
        path.write_text("")
        rotations += 1
        before_current = written

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        kill_at = time.monotonic() + rng.uniform(0.8, 1.6)
        while written < total or kills < kills_wanted:
            if written < total:
                write_some()
                if written - before_current >= 25 and position_in_current_file():
                    rotate()
            time.sleep(rng.uniform(0.02, 0.08))
            if kills < kills_wanted and time.monotonic() >= kill_at:
                assert wait_until(lambda: log_path.read_text().count("running:") == kills + 1)  # noqa: B023 (called at once); up, then killed
                down_rotation = before_current < written < total and position_in_current_file()
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                kills += 1
                if down_rotation:  # lines the runner never saw, then rotated away while it is down
                    write_some()
                    rotate()
                    rotations_while_down += 1
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
                kill_at = time.monotonic() + rng.uniform(0.8, 1.6)
        wait_until(lambda: _count(state, "SELECT count(*) FROM events") >= total, timeout=120)
        # the last runner is up (its SIGTERM handler set) before it is stopped
        assert wait_until(lambda: log_path.read_text().count("running:") == kills + 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert rotations >= 4 and rotations_while_down >= 1 and kills == kills_wanted
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (total, total)
        profiles = db.execute("SELECT customer_id, json FROM profiles")
        counts = {cid: json.loads(text)["order_count"] for cid, text in profiles}
        assert counts == dict(Counter(f"c-{n % CUSTOMERS}" for n in range(total)))
        assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    text = log_path.read_text()
    assert "Traceback" not in text and "were not read" not in text


def test_an_io_error_is_reported_once_and_reading_resumes_at_the_position(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    path.write_text(lines("a-1"))
    follower = Follower(path)
    assert follower.ids() == ["a-1"]
    with path.open("a") as handle:
        handle.write(line("a-2"))
    real_pread = os.pread

    def failing_pread(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "pread", failing_pread)
    assert follower.ids() == [] and follower.ids() == []
    assert [m for m in follower.messages if "cannot read it: Input/output error" in m] == [
        f"jsonl:{path}: cannot read it: Input/output error; waiting"]
    monkeypatch.setattr(os, "pread", real_pread)
    assert follower.ids() == ["a-2"]
