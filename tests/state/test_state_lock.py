"""One runner per state, whatever name reaches the file: the lock is a flock() on the state file itself.

Real processes throughout: a runner holds the state, and second runners (`run`, `replay --state`,
`dead-letters --retry`) come at it through the same path, a symlink, a hard link, a relative or an
absolute path. A runner killed with SIGKILL leaves no lock behind.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from helpers import rulecrm, wait_for, write_rules

from rulecrm.errors import StateError
from rulecrm.state.store import Store

pytestmark = pytest.mark.slow  # real runner processes hold the state

RULES = """
shop: {timezone: UTC}
channels:
  out: {type: jsonl, path: "%s"}
rules:
  - id: thanks
    on: order.placed
    notify: {to: customer, channel: out, kind: service, template: "thanks {customer.id}"}
"""


def event(event_id, customer):
    return json.dumps({"id": event_id, "type": "order.placed", "customer_id": customer,
                       "at": "2026-03-01T10:00:00Z", "data": {"sku": "tea", "amount": 1}}) + "\n"




def sent_keys(path):
    if not path.exists():
        return []
    return [json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()]


def recorded_sent(state, key) -> bool:
    """The runner committed the channel's answer for `key` (a kill after this cannot repeat the send)."""
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT status FROM actions WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return False
    return row == ("sent",)


class Shop:
    """A working directory with rules, a followed events file, and runners started in it."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.sends = tmp_path / "sends.jsonl"
        self.rules = write_rules(tmp_path, RULES % self.sends)
        self.events = tmp_path / "events.jsonl"
        self.events.write_text("")
        self.processes = []

    def start(self, state="state.db", name="runner"):
        log = self.dir / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "rulecrm", "run", "--rules", str(self.rules), "--state", str(state),
             "--source", f"jsonl:{self.events}"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True,
        )
        self.processes.append(process)
        assert wait_for(lambda: "running:" in log.read_text() or process.poll() is not None)
        assert process.poll() is None, log.read_text()
        return process, log

    def add(self, event_id, customer):
        with self.events.open("a") as handle:
            handle.write(event(event_id, customer))

    def stop_all(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture
def shop(tmp_path):
    made = Shop(tmp_path)
    yield made
    made.stop_all()


def refusal(path, pid):
    return f"error: state {path} is in use by another rulecrm process (pid {pid}); stop it or use another --state"


NAMES = {
    "same path": lambda d: "state.db",
    "absolute path": lambda d: str(d / "state.db"),
    "relative path through a directory": lambda d: "sub/../state.db",
    "symlink": lambda d: _link(d, "symlink", lambda target, link: link.symlink_to(target)),
    "hard link": lambda d: _link(d, "hardlink", lambda target, link: os.link(target, link)),
}


def _link(directory, name, make):
    (directory / "links").mkdir(exist_ok=True)
    link = directory / "links" / f"{name}.db"
    make(directory / "state.db", link)
    return str(link)


@pytest.mark.parametrize("name", NAMES)
def test_a_second_runner_is_refused_however_it_names_the_state(shop, name):
    holder, _log = shop.start("state.db")
    (shop.dir / "sub").mkdir()
    other = NAMES[name](shop.dir)
    shop.add("o-1", "c-1")
    rules = shop.rules
    attempts = {
        "run": rulecrm("run", "--rules", rules, "--state", other, "--once", cwd=shop.dir),
        "replay": rulecrm("replay", "--rules", rules, "--events", shop.events, "--state", other, "--out", "-",
                          cwd=shop.dir),
        "dead-letters --retry": rulecrm("dead-letters", "--state", other, "--retry", "--rules", rules, cwd=shop.dir),
    }
    for command, done in attempts.items():
        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr.splitlines() == [refusal(other, holder.pid)], command
        assert done.stdout == ""
    # the holder was not disturbed: it applied the event once and delivered it once
    assert wait_for(lambda: sent_keys(shop.sends) == ["thanks|c-1|o-1"])
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 0
    with sqlite3.connect(shop.dir / "state.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (1,)
    assert sent_keys(shop.sends) == ["thanks|c-1|o-1"]


@pytest.mark.parametrize("name", ["same path", "symlink"])
def test_after_kill_9_of_the_holder_a_new_runner_starts(shop, name):
    first, _log = shop.start("state.db", name="first")
    shop.add("o-1", "c-1")
    assert wait_for(lambda: sent_keys(shop.sends) == ["thanks|c-1|o-1"])
    # killed once the answer is committed: a kill between the send and that commit would repeat the
    # send after the restart (at least once, by design), which is not what this test is about
    assert wait_for(lambda: recorded_sent(shop.dir / "state.db", "thanks|c-1|o-1"))
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    second, _log = shop.start(NAMES[name](shop.dir), name="second")  # the kernel dropped the lock with the process
    shop.add("o-2", "c-2")
    assert wait_for(lambda: sent_keys(shop.sends) == ["thanks|c-1|o-1", "thanks|c-2|o-2"])
    # ... and it holds the lock in turn
    third = rulecrm("run", "--rules", shop.rules, "--state", "state.db", "--once", cwd=shop.dir)
    assert third.returncode == 1 and third.stderr.splitlines() == [refusal("state.db", second.pid)]
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0


def test_readers_still_read_a_state_a_runner_holds(shop):
    """The runner's flock() does not touch SQLite's own locks: listing and explaining still work."""
    holder, log = shop.start("state.db")
    shop.add("o-1", "c-1")
    with shop.events.open("a") as handle:
        handle.write("not json\n")
    assert wait_for(lambda: sent_keys(shop.sends) == ["thanks|c-1|o-1"] and "rejected" in log.read_text())
    listed = rulecrm("dead-letters", "--state", shop.dir / "state.db", cwd=shop.dir)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["raw"] for line in listed.stdout.splitlines()] == ["not json"]
    explained = rulecrm("explain", "--rules", shop.rules, "--state", "state.db", "--customer", "c-1", cwd=shop.dir)
    assert explained.returncode == 0, explained.stderr
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 0


def _posix_locks(pid, path):
    """POSIX (fcntl) lock lines of `pid` on `path` in /proc/locks: SQLite's locks."""
    status = os.stat(path)
    inode = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    with open("/proc/locks") as handle:
        # without the leading ordinal, which changes as other processes take and drop locks
        return [line.split(":", 1)[1].strip() for line in handle if " POSIX " in line and f" {pid} {inode} " in line]


def test_releasing_the_lock_leaves_sqlite_locks_of_other_stores_alone(tmp_path):
    """Closing any descriptor of a file drops every POSIX lock of the process on it, SQLite's included.
    So a lock's descriptor is closed only once no store of this process has the file open."""
    path = str(tmp_path / "s.db")
    reader = Store.open(path)
    try:
        reader.get_meta("format")
        held = _posix_locks(os.getpid(), path)
        assert held  # SQLite keeps a shared lock on a WAL database while a connection is open
        runner = Store.open(path, lock=True)
        with pytest.raises(StateError, match=f"pid {os.getpid()}"):
            Store.open(str(tmp_path / "." / "s.db"), lock=True)  # refused without touching the file
        runner.close()
        assert _posix_locks(os.getpid(), path) == held
        again = Store.open(path, lock=True)  # the runner lock itself was released
        again.close()
        assert _posix_locks(os.getpid(), path) == held
    finally:
        reader.close()


def test_a_state_that_cannot_be_created_is_one_clear_line(tmp_path):
    missing = tmp_path / "no-such-dir" / "state.db"
    done = rulecrm("run", "--rules", write_rules(tmp_path, RULES % (tmp_path / "s.jsonl")), "--state", missing,
                   "--once", cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: cannot open state {missing}") and "does not exist" in line
