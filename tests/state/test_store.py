"""Tests for the SQLite state store."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest

from rulecrm.errors import StateError
from rulecrm.state import store as store_module
from rulecrm.state.store import SCHEMA_VERSION, Store


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    path = ":memory:" if request.param == "memory" else str(tmp_path / "state.db")
    with Store.open(path) as opened:
        yield opened


def _timer(key, due, rule_index=0, seq=0, customer_id="c1", payload=None):
    return (key, due, rule_index, seq, customer_id, payload or {"rule": "r"})


def test_file_store_uses_wal_and_records_schema_version(tmp_path):
    with Store.open(str(tmp_path / "s.db")) as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert store.get_meta("schema_version") == SCHEMA_VERSION


def test_reopening_keeps_the_data(tmp_path):
    path = str(tmp_path / "s.db")
    with Store.open(path) as store:
        store.set_meta("cursor", {"line": 7})
        store.put_profiles([("c1", {"order_count": 2})])
    with Store.open(path) as store:
        assert store.get_meta("cursor") == {"line": 7}
        assert store.get_profile("c1") == {"order_count": 2}


def test_temporary_store_is_removed_on_close():
    store = Store.open(None)
    path = store.path
    store.lock()
    store.put_profiles([("c1", {})])
    assert os.path.exists(path)
    store.close()
    assert not any(os.path.exists(path + suffix) for suffix in ("", "-wal", "-shm", ".lock"))


def test_meta_round_trips_json_values(store):
    assert store.get_meta("missing") is None
    assert store.get_meta("missing", 5) == 5
    store.set_meta("k", [1, "two", {"three": None}])
    assert store.get_meta("k") == [1, "two", {"three": None}]
    store.set_meta("k", False)
    assert store.get_meta("k") is False


def test_record_event_dedupes_by_id(store):
    assert store.record_event("e1", "c1", 100.0, "order.placed", "{}") is True
    assert store.record_event("e1", "c1", 100.0, "order.placed", "{}") is False
    assert store.has_event("e1")
    assert not store.has_event("e2")
    assert store.count_events() == 1


def test_profiles(store):
    assert store.get_profile("c1") is None
    store.put_profiles([("c2", {"tags": ["b"]}), ("c1", {"tags": ["a"]})])
    store.put_profiles([("c1", {"tags": ["a", "z"]})])
    assert store.get_profile("c1") == {"tags": ["a", "z"]}
    assert list(store.iter_profiles()) == [("c1", {"tags": ["a", "z"]}), ("c2", {"tags": ["b"]})]


def test_iter_profiles_pages_through_many_rows(store, monkeypatch):
    monkeypatch.setattr(store_module, "_PAGE", 7)
    store.put_profiles((f"c{i:03d}", {"i": i}) for i in range(50))
    assert [profile["i"] for _, profile in store.iter_profiles()] == list(range(50))


def test_timers_are_ordered_and_upserted_by_key(store, monkeypatch):
    monkeypatch.setattr(store_module, "_PAGE", 2)
    store.put_timers(
        [
            _timer("a", 200.0, 1, 5),
            _timer("b", 100.0, 2, 1, "c2"),
            _timer("c", 100.0, 1, 9),
            _timer("d", 100.0, 1, 3),
            _timer("e", 300.0),
        ]
    )
    assert [t[0] for t in store.iter_timers()] == ["d", "c", "b", "a", "e"]
    store.put_timers([_timer("b", 50.0, 2, 1, "c2", {"step": 1})])
    timers = list(store.iter_timers())
    assert timers[0] == ("b", 50.0, 2, 1, "c2", {"step": 1})
    assert [t[0] for t in store.iter_timers(until=200.0)] == ["b", "d", "c", "a"]
    assert [t[0] for t in store.timers_for("c1")] == ["d", "c", "a", "e"]
    assert store.next_timer_due() == 50.0
    store.delete_timers(["b", "nope"])
    assert [t[0] for t in store.iter_timers()] == ["d", "c", "a", "e"]
    assert store.timers_for("c2") == []


def test_iteration_survives_deleting_the_rows_already_seen(store, monkeypatch):
    monkeypatch.setattr(store_module, "_PAGE", 3)
    store.put_timers(_timer(f"t{i:02d}", float(i)) for i in range(10))
    seen = []
    for timer in store.iter_timers(until=7.0):
        seen.append(timer[0])
        store.delete_timers([timer[0]])
    assert seen == [f"t{i:02d}" for i in range(8)]
    assert [t[0] for t in store.iter_timers()] == ["t08", "t09"]


def test_actions_upsert_filter_and_keep_first_write_order(store):
    due = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
    store.put_actions(
        [
            {"key": "k1", "customer_id": "c1", "rule": "r1", "status": "deferred", "due_at": due, "sent_at": None},
            {"key": "k2", "customer_id": "c2", "rule": "r1", "status": "sent", "due_at": "2026-03-01T11:00:00+00:00"},
        ]
    )
    store.put_actions([{"key": "k1", "customer_id": "c1", "rule": "r1", "status": "sent", "due_at": due,
                        "sent_at": due}])
    action = store.get_action("k1")
    assert action["status"] == "sent"
    assert action["due_at"] == "2026-03-01T10:00:00+00:00"
    assert action["reported"] is False
    assert store.get_action("nope") is None
    assert [a["key"] for a in store.iter_actions()] == ["k1", "k2"]
    assert [a["key"] for a in store.iter_actions(customer_id="c2")] == ["k2"]
    assert [a["key"] for a in store.iter_actions(status="sent", customer_id="c1")] == ["k1"]
    assert list(store.iter_actions(status="failed")) == []
    store.mark_reported(["k2"])
    assert store.get_action("k2")["reported"] is True
    assert [a["key"] for a in store.iter_actions(reported=False)] == ["k1"]
    row = store._db.execute("SELECT status, due_at, sent_at, reported FROM actions WHERE key = 'k1'").fetchone()
    assert row == ("sent", "2026-03-01T10:00:00+00:00", "2026-03-01T10:00:00+00:00", 0)


def test_action_without_key_is_refused_and_nothing_is_written(store):
    with pytest.raises(ValueError, match="key"):
        store.put_actions([{"key": "k1"}, {"status": "sent"}])
    assert list(store.iter_actions()) == []


def test_dead_letters(store):
    first = store.add_dead_letter(source="in.jsonl", line_no=3, raw="{oops", error="not valid JSON")
    second = store.add_dead_letter(source="in.jsonl", line_no=9, raw="[]", error="expected a JSON object")
    again = store.add_dead_letter(source="in.jsonl", line_no=3, raw="{oops", error="not valid JSON: again")
    assert again == first
    letters = list(store.iter_dead_letters())
    assert [(d["id"], d["line_no"], d["raw"]) for d in letters] == [(first, 3, "{oops"), (second, 9, "[]")]
    assert letters[0]["error"] == "not valid JSON: again"
    assert letters[0]["source"] == "in.jsonl"
    assert datetime.fromisoformat(letters[0]["at"]).tzinfo is not None
    assert store.resolve_dead_letter(first, how="removed")
    assert [d["id"] for d in store.iter_dead_letters()] == [second]
    assert not store.resolve_dead_letter(first, how="removed")  # gone already
    # the same line of the same source read again is not a new dead letter: it was dealt with
    assert store.add_dead_letter(source="in.jsonl", line_no=3, raw="{oops", error="not valid JSON") is None
    assert store.add_dead_letter(source="in.jsonl", line_no=3, raw="{oops!", error="not valid JSON") is not None


def test_transaction_rolls_back_everything_on_error(store):
    store.put_profiles([("c0", {"v": 0})])
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.put_profiles([("c0", {"v": 1}), ("c1", {"v": 1})])
            store.record_event("e1", "c1", 1.0, "x", "{}")
            store.put_timers([_timer("t1", 1.0)])
            store.put_actions([{"key": "a1"}])
            store.add_dead_letter(source="s", line_no=1, raw="x", error="e")
            with store.transaction():  # nested: joins the outer transaction
                store.set_meta("k", 1)
            raise RuntimeError("crash in the middle")
    assert store.get_profile("c0") == {"v": 0}
    assert store.get_profile("c1") is None
    assert not store.has_event("e1")
    assert list(store.iter_timers()) == []
    assert list(store.iter_actions()) == []
    assert list(store.iter_dead_letters()) == []
    assert store.get_meta("k") is None
    store.put_profiles([("c2", {})])  # the store is usable afterwards
    assert store.get_profile("c2") == {}


def test_a_failing_batch_writes_nothing(store):
    def items():
        yield "c1", {"ok": True}
        yield "c2", {"bad": object()}

    with pytest.raises(TypeError):
        store.put_profiles(items())
    assert store.get_profile("c1") is None


def test_killed_process_leaves_nothing_half_written(tmp_path):
    path = str(tmp_path / "s.db")
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from rulecrm.state.store import Store
        store = Store.open({path!r})
        store.put_profiles([("kept", {{"v": 1}})])
        with store.transaction():
            store.put_profiles([("lost", {{"v": 2}})])
            store.put_timers([("t", 1.0, 0, 0, "lost", {{}})])
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9
    with Store.open(path) as store:
        assert store.get_profile("kept") == {"v": 1}
        assert store.get_profile("lost") is None
        assert list(store.iter_timers()) == []


def test_lock_refuses_a_second_process(tmp_path):
    path = str(tmp_path / "s.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from rulecrm.state.store import Store\ns = Store.open({path!r})\ns.lock()\n"
            "print('locked', flush=True)\ninput()\ns.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with Store.open(path) as store:
            with pytest.raises(StateError) as excinfo:
                store.lock()
        message = str(excinfo.value)
        assert message == (
            f"state {path} is in use by another rulecrm process (pid {holder.pid}); stop it or use another --state"
        )
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    with Store.open(path) as store:  # released when the holder stopped
        store.lock()
        store.lock()  # taking it again in the same store is a no-op


def test_lock_is_exclusive_between_two_stores_and_released_on_close(tmp_path):
    path = str(tmp_path / "s.db")
    first = Store.open(path)
    first.lock()
    second = Store.open(path)
    with pytest.raises(StateError, match=f"pid {os.getpid()}"):
        second.lock()
    first.close()
    second.lock()
    second.close()


def test_memory_store_lock_is_a_no_op():
    with Store.open(":memory:") as store:
        store.lock()


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not SQLite at all\n" * 100)
    with pytest.raises(StateError, match="not a rulecrm state"):
        Store.open(str(path))


def test_an_unrelated_sqlite_database_is_refused(tmp_path):
    path = str(tmp_path / "other.db")
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE customers (id TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(StateError, match="not a rulecrm state"):
        Store.open(path)


def test_a_foreign_database_with_a_meta_table_is_refused(tmp_path):
    path = str(tmp_path / "other.db")
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    connection.execute("CREATE TABLE users (id TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(StateError, match="not a rulecrm state"):
        Store.open(path)


def test_a_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "s.db")
    with Store.open(path) as store:
        store.set_meta("schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(StateError, match="newer than this rulecrm understands"):
        Store.open(path)


def test_an_empty_file_becomes_a_state(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with Store.open(str(path)) as store:
        assert store.get_meta("schema_version") == SCHEMA_VERSION


def test_a_kept_state_indexes_waiting_actions_by_channel_and_a_scratch_store_does_not(tmp_path):
    """The dispatcher reads each channel's waiting actions through `actions_waiting`, and the outbox's
    readers actions by status; a replay without --state never delivers and reads the held actions
    once, at its end, so its scratch store pays an index update per action for neither."""
    from rulecrm.state.scratch import ScratchStore

    def indexes(store):
        return {row[0] for row in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}

    kept = Store.open(str(tmp_path / "state.db"))
    scratch = ScratchStore.open_scratch()
    try:
        assert {"actions_waiting", "actions_status"} <= indexes(kept)
        assert not {"actions_waiting", "actions_status"} & indexes(scratch)
        with kept.transaction():
            kept.put_actions([{"key": f"k-{n}", "customer_id": f"c-{n}", "status": "queued",
                               "channel": "wecom" if n % 2 else "sms"} for n in range(6)])
        plan = kept._db.execute(
            "EXPLAIN QUERY PLAN SELECT key FROM actions WHERE status = 'queued' AND "
            "coalesce(json_extract(json, '$.channel'), '') = 'sms' AND rowid > 0 ORDER BY rowid").fetchall()
        assert "actions_waiting" in str(plan)
        assert [customer for customer, _next, _text in kept.iter_waiting_actions("queued", "sms")] == \
            ["c-0", "c-2", "c-4"]
        assert kept.waiting_channels("queued") == {"sms", "wecom"}
    finally:
        kept.close()
        scratch.close()


def test_waiting_actions_pass_over_the_sends_in_flight_across_pages(tmp_path):
    """The keys in flight head the queue and can fill more than a page: the read still returns every
    other waiting action of the channel, in the order they were written, each once."""
    from rulecrm.state import store as store_module

    with Store.open(str(tmp_path / "state.db")) as store:
        with store.transaction():
            store.put_actions([{"key": f"k-{n}", "customer_id": f"c-{n}", "status": "queued", "channel": "sms",
                                "next_attempt": None} for n in range(3 * store_module._WAITING_PAGE)])
        in_flight = {f"k-{n}" for n in range(store_module._WAITING_PAGE + 5)} | {"k-100", "gone"}
        got = [customer for customer, _next, _text in store.iter_waiting_actions("queued", "sms", skip_keys=in_flight)]
        expected = [f"c-{n}" for n in range(3 * store_module._WAITING_PAGE) if f"k-{n}" not in in_flight]
        assert got == expected
        assert len(got) == 3 * store_module._WAITING_PAGE - store_module._WAITING_PAGE - 6


def test_a_scratch_shard_opened_again_is_not_read_page_by_page(tmp_path, monkeypatch):
    """A partitioned replay reopens its temporary shards to fire their timers; they are its own files
    of a moment before, so the structural check every kept state gets at open is skipped for them."""
    from rulecrm.state.scratch import ScratchStore

    statements = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(store_module.sqlite3, "connect", traced)

    def checks_at_reopen(open_store, path) -> bool:
        open_store(str(path)).close()
        assert path.exists()  # a named scratch file is its owner's to remove
        statements.clear()
        open_store(str(path)).close()
        return any("quick_check" in statement for statement in statements)

    assert checks_at_reopen(Store.open, tmp_path / "state.db")
    assert not checks_at_reopen(ScratchStore.open_scratch, tmp_path / "shard.db")
