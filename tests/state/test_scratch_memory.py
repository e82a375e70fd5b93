"""A scratch store keeps recorded event ids and decided action keys in memory until there are many.

Memory must answer as the table would: what a rolled-back transaction recorded is forgotten, what is
written once memory is full is still found, a held action that is decided later is no longer held,
and a named file opened again (a partition's shard) holds everything.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rulecrm.engine.actions import Action
from rulecrm.engine.enums import Status
from rulecrm.state.scratch import ScratchStore

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def record(store, event_id: str) -> bool:
    return store.record_event(event_id, "c1", T0.timestamp(), "order.placed", f"text of {event_id}")


def action(key: str, status: Status) -> Action:
    return Action(key=key, rule="r", customer_id="c1", kind="notify", to="customer", due_at=T0, status=status,
                  reason="quiet-hours" if status is Status.DEFERRED else None)


def rows(store, table: str) -> int:
    return store._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture
def store():
    store = ScratchStore.open_scratch()
    yield store
    store.close()


def test_a_rolled_back_transaction_forgets_the_ids_and_keys_it_recorded(store):
    with store.transaction():
        assert record(store, "e1") and not record(store, "e1")
        store.put_outbox([action("k1", Status.SENT)])
    with pytest.raises(RuntimeError), store.transaction():
        assert record(store, "e2")
        store.put_outbox([action("k2", Status.SUPPRESSED)])
        assert store.has_event("e2") and store.has_action("k2")
        raise RuntimeError("the step failed")
    assert store.event_text("e1") == "text of e1" and not store.has_event("e2")
    assert store.has_action("k1") and not store.has_action("k2")
    assert store.get_action("k1") == {"status": "sent", "reported": False} and store.get_action("k2") is None
    assert store.count_events() == 1 and [a["status"] for a in store.iter_actions()] == ["sent"]
    assert rows(store, "events") == 0 and rows(store, "actions") == 0  # all in memory so far


def test_memory_full_is_written_in_one_go_and_still_found(store, monkeypatch):
    monkeypatch.setattr(store._events, "limit", 3)
    monkeypatch.setattr(store._decided, "limit", 3)
    for n in range(7):
        with store.transaction():
            assert record(store, f"e{n}")
            store.put_outbox([action(f"k{n}", Status.SENT)])
    assert rows(store, "events") == 6 and rows(store, "actions") == 6  # written twice, three at a time
    assert len(store._events.committed) == 1
    assert all(not record(store, f"e{n}") for n in range(7))  # the written ones too
    assert store.event_text("e0") == "text of e0" and store.count_events() == 7
    assert all(store.has_action(f"k{n}") for n in range(7)) and not store.has_action("k7")
    assert len(list(store.iter_actions(status="sent"))) == 7


def test_a_held_action_decided_later_is_no_longer_held(store):
    with store.transaction():
        store.put_outbox([action("held", Status.DEFERRED), action("sent-at-once", Status.SENT)])
    assert [a["key"] for a in store.iter_actions(status="deferred")] == ["held"]
    with store.transaction():
        store.put_outbox([action("held", Status.SENT)])  # released after quiet hours
    assert list(store.iter_actions(status="deferred")) == []
    assert store.get_action("held")["status"] == "sent" and store.has_action("sent-at-once")


def test_a_named_file_opened_again_holds_every_id_and_key(tmp_path):
    path = str(tmp_path / "shard.db")
    first = ScratchStore.open_scratch(path)
    with first.transaction():
        record(first, "e1")
        first.put_outbox([action("k1", Status.SENT)])
    first.close()
    again = ScratchStore.open_scratch(path)
    try:
        assert not record(again, "e1") and again.event_text("e1") == "text of e1"
        assert again.has_action("k1") and next(again.iter_actions(), None) is not None
    finally:
        again.close()

