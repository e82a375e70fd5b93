"""The parts behind the engine's front: enums, frozen actions, compiled rules, timer book, changes, outbox."""
from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import attrs
import orjson
import pytest

from rulecrm.backends import get_backend
from rulecrm.engine.actions import Action
from rulecrm.engine.changes import Changes
from rulecrm.engine.compiled import CompiledRules
from rulecrm.engine.core import Engine
from rulecrm.engine.enums import Outcome, Status, TimerKind
from rulecrm.engine.outbox import Outbox
from rulecrm.engine.timerbook import TimerBook
from rulecrm.engine.timers import Timer, TimerQueue
from rulecrm.events import Event
from rulecrm.rulefile.loader import load_rules
from rulecrm.state.store import Store
from rulecrm.testing import files

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)

RULES = """
products:
  - {sku: tea, cycle: 30d}
  - {sku: coffee, learn_cycle: true}
contacts:
  cs: {channel: console, address: cs-group}
rules:
  - id: vip
    when: customer.order_count >= 2
    tag: vip
  - id: refill
    on: order.placed
    after: cycle
    recheck: customer.order_count >= 1
    notify: {to: customer, template: "refill"}
  - id: bad-review
    on: review.created
    escalate:
      unless: review.handled same review_id
      steps:
        - {after: 2h, notify: {to: cs, template: "still open"}}
        - {after: 24h, notify: {to: cs, template: "still open"}}
  - id: wishes
    on: birthday
    notify: {to: customer, template: "happy birthday"}
"""


@pytest.fixture
def ruleset(tmp_path):
    return load_rules(files.write_rules(tmp_path, RULES))


@pytest.fixture
def store():
    store = Store.open(":memory:")
    yield store
    store.close()


def action(**fields) -> Action:
    values = {"key": "r|c1|e1", "rule": "r", "customer_id": "c1", "kind": "notify", "to": "customer", "due_at": T0}
    return Action(**{**values, **fields})


def review(at, review_id="r1", type_="review.created") -> Event:
    data = {"review_id": review_id, "rating": 1} if type_ == "review.created" else {"review_id": review_id}
    return Event(type_, "c1", at, data, id=f"{type_}|{review_id}|{at.isoformat()}")


# -- enums ---------------------------------------------------------------------------------
def test_enum_members_are_their_text_everywhere():
    assert Status.SENT == "sent" and hash(Status.SENT) == hash("sent") and {"sent": 1}[Status.SENT] == 1
    assert f"actions_{Status.QUEUED}" == "actions_queued" and str(TimerKind.AFTER) == "after"
    assert json.dumps([Outcome.APPLIED]) == '["applied"]' and orjson.dumps([Status.DEAD]) == b'["dead"]'


# -- actions -------------------------------------------------------------------------------
def test_an_action_is_frozen_and_evolves_into_a_new_value():
    held = action()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        held.status = Status.SENT
    sent = attrs.evolve(held, status=Status.SENT)
    assert held.status is Status.PENDING and sent.status is Status.SENT


def test_an_action_writes_its_statuses_as_plain_text_and_reads_them_back_as_enums():
    record = action(status=Status.DEFERRED, reported_status=Status.DEFERRED).to_dict()
    assert type(record["status"]) is str and type(record["reported_status"]) is str
    back = Action.from_dict(record, timezone.utc)
    assert back.status is Status.DEFERRED and back.reported_status is Status.DEFERRED
    assert Action.from_dict(action().to_dict(), timezone.utc).reported_status is None


# -- compiled rules ------------------------------------------------------------------------
def test_compiled_rules_index_the_rule_set_once(ruleset):
    rules = CompiledRules.build(ruleset)
    assert set(rules.rules_by_id) == {"vip", "refill", "bad-review", "wishes"}
    assert [r.id for r in rules.profile_rules] == ["vip"]
    assert rules.event_rule_types == {"order.placed", "review.created", "birthday"}
    assert [r.id for r in rules.birthday_rules] == ["wishes"]
    assert set(rules.products) == set(rules.product_maps) == {"tea", "coffee"} and rules.learn_skus == {"coffee"}
    assert set(rules.after) == set(rules.recheck) == {"refill"}
    assert set(rules.steps) == {("bad-review", 1), ("bad-review", 2)}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        rules.after = {}
    with pytest.raises(TypeError):
        rules.after["other"] = None


# -- timer book ----------------------------------------------------------------------------
def book_on(store, changes=None, **options):
    book = TimerBook(changes or Changes(), store, **options)
    book.load()
    return book


def test_scheduling_a_key_again_replaces_the_timer_and_notes_only_the_latest(store):
    changes = Changes()
    book = book_on(store, changes)
    book.schedule("k", T0 + timedelta(hours=2), 0, "c1", {"type": TimerKind.STAGE})
    book.schedule("k", T0 + timedelta(hours=1), 0, "c1", {"type": TimerKind.STAGE})
    assert book.seq == 2 and book.due_of("c1", "k") == (T0 + timedelta(hours=1)).timestamp()
    assert list(changes.timers_put) == ["k"] and changes.timers_put["k"].seq == 2
    with store.transaction():
        assert book.next_due() == (T0 + timedelta(hours=1)).timestamp()
        assert [timer.key for timer in book.all_pending()] == ["k"]
        book.drop("c1", "k")
        assert book.next_due() is None and book.due_of("c1", "k") is None and book.all_pending() == []


def test_a_timer_due_at_the_limit_is_taken_only_when_inclusive(store):
    book = book_on(store)
    book.schedule("k", T0, 0, "c1", {"type": TimerKind.STAGE})
    with store.transaction():
        assert book.pop_due(T0.timestamp(), inclusive=False) is None
        assert book.pop_due(T0.timestamp(), inclusive=True).key == "k"
        assert book.pop_due(T0.timestamp(), inclusive=True) is None


def test_timers_fire_in_due_then_rule_then_creation_order(store):
    book = book_on(store)
    book.schedule("late", T0 + timedelta(hours=1), 0, "c1", {"type": TimerKind.STAGE})
    book.schedule("rule2", T0, 2, "c1", {"type": TimerKind.STAGE})
    book.schedule("rule1-second", T0, 1, "c1", {"type": TimerKind.STAGE})
    book.schedule("rule1-first", T0 - timedelta(0), 1, "c2", {"type": TimerKind.STAGE})
    book.schedule("rule1-second", T0, 1, "c1", {"type": TimerKind.STAGE})  # replaced: now created last
    limit = (T0 + timedelta(days=1)).timestamp()
    with store.transaction():
        fired = [timer.key for timer in iter(lambda: book.pop_due(limit, inclusive=True), None)]
    assert fired == ["rule1-first", "rule1-second", "rule2", "late"]


class OneBigQueue:
    """The reference for the timer window: every pending timer in one queue, (due, rule order,
    creation order); `move()` schedules, replaces, drops or fires at random on the book and here."""

    def __init__(self, book, rng):
        self.book, self.rng = book, rng
        self.timers = {}  # key -> (due epoch, rule index, creation number, customer)
        self.fired = 0

    def schedule(self, key):
        rng = self.rng
        customer = self.timers[key][3] if key in self.timers else f"c{rng.randrange(9)}"
        due, rule_index = T0 + timedelta(minutes=rng.randrange(150)), rng.randrange(3)
        self.book.schedule(key, due, rule_index, customer, {"type": TimerKind.STAGE})
        self.timers[key] = (due.timestamp(), rule_index, self.book.seq, customer)

    def move(self, *, fire: float, schedule: float) -> None:
        """Fire with probability `fire`, else schedule up to `schedule`, else drop a timer."""
        move = self.rng.random()
        if move < fire:
            timer = self.book.pop_due(float("inf"), inclusive=True)
            expected = min(self.timers, key=lambda k: self.timers[k][:3]) if self.timers else None
            assert (timer.key if timer else None) == expected
            self.timers.pop(expected, None)
            self.fired += timer is not None
        elif move < schedule:
            self.schedule(f"t{self.rng.randrange(90)}")
        elif self.timers:
            key = self.rng.choice(sorted(self.timers))
            self.book.drop(self.timers.pop(key)[3], key)


def test_a_small_window_fires_many_timers_in_exactly_the_order_of_one_big_queue(store):
    """Timers are read from the store a window at a time; scheduling, replacing and dropping while
    the window is partly read must not change the firing order (due, rule order, creation order)."""
    queue = OneBigQueue(book_on(store, window=5), random.Random(7))
    with store.transaction():
        for n in range(60):
            queue.schedule(f"t{n}")
        for _ in range(300):
            queue.move(fire=0.4, schedule=0.8)
    assert queue.fired > 50


@pytest.mark.parametrize("seed", range(1, 9))
def test_a_window_read_through_unwritten_changes_fires_in_the_order_of_one_big_queue(store, seed):
    """The window is refilled from the store as of the last flush, seen through the changes made
    since: a timer fired, dropped or rescheduled after its row was written must not come back at
    its old place, and a new one must not be missed. Flushes come at random, so the store holds
    stale rows for many keys whenever the window runs dry."""
    changes = Changes()
    rng = random.Random(seed)
    queue = OneBigQueue(book_on(store, changes, window=3), rng)
    flushes = 0
    with store.transaction():
        for n in range(40):
            queue.schedule(f"t{n}")
        changes.flush_timers(store)
        for _ in range(600):
            if rng.random() < 0.1:
                changes.flush_timers(store)
                flushes += 1
            else:
                queue.move(fire=0.39, schedule=0.83)
    assert queue.fired > 100 and flushes > 30


def test_a_refill_among_many_unwritten_timers_takes_a_window_of_them_in_order(store):
    """A long step leaves many timers unwritten: a refill takes the first window of them only (memory
    stays bounded), and the ones after it still fire, in order, from later refills."""
    changes = Changes()
    book = book_on(store, changes, window=4)
    rng = random.Random(3)
    dues = {f"t{n}": T0 + timedelta(minutes=rng.randrange(1000)) for n in range(30)}
    for key, due in dues.items():
        book.schedule(key, due, 0, f"c{key}", {"type": TimerKind.STAGE})
    assert not changes.timers_deleted and len(changes.timers_put) == 30  # nothing written yet
    fired = []
    while (timer := book.pop_due(float("inf"), inclusive=True)) is not None:
        assert len(book._window) <= 4
        fired.append(timer.key)
    assert fired == sorted(dues, key=lambda key: (dues[key], int(key[1:])))


def test_a_refill_goes_on_past_a_whole_page_of_rows_that_the_changes_hide(store):
    """Every row of the first page read from the store was fired or dropped since it was written:
    the next pending timer is still found, not taken for the end of the timers."""
    changes = Changes()
    book = book_on(store, changes, window=3)
    for n in range(8):
        book.schedule(f"t{n}", T0 + timedelta(minutes=n), 0, "c1", {"type": TimerKind.STAGE})
    with store.transaction():
        changes.flush_timers(store)
        book.load()  # a fresh window: every timer is read back from the store
        for n in range(6):
            book.drop("c1", f"t{n}")
        assert book.next_due() == (T0 + timedelta(minutes=6)).timestamp()
        assert [book.pop_due(float("inf"), inclusive=True).key for _ in range(2)] == ["t6", "t7"]
        assert book.pop_due(float("inf"), inclusive=True) is None


def test_customers_timers_leave_memory_after_a_flush_and_come_back_from_the_store(store):
    changes = Changes()
    book = book_on(store, changes, cache_capacity=2)
    for n in range(5):
        book.schedule(f"esc|c{n}", T0 + timedelta(hours=n), 0, f"c{n}", {"type": TimerKind.ESCALATE},
                      unless=("review.handled", "review_id", "r1"))
    with store.transaction():
        changes.flush(store, None, seq=book.seq, now=T0)
    book.trim()  # c0-c4 become the old generation
    for n in range(5, 8):
        book.schedule(f"esc|c{n}", T0 + timedelta(hours=n), 0, f"c{n}", {"type": TimerKind.STAGE})
    with store.transaction():
        changes.flush(store, None, seq=book.seq, now=T0)
    book.trim()  # c5-c7 outgrew the capacity: c0-c4, unused since, leave memory
    assert sorted(book._customers) == ["c5", "c6", "c7"]
    assert book.cancel_matching("c0", review(T0, "r1", "review.handled")) == 1
    with store.transaction():
        changes.flush(store, None, seq=book.seq, now=T0)
    assert [row[0] for row in store.iter_timers()] == [f"esc|c{n}" for n in range(1, 8)]


def test_an_event_cancels_only_the_timers_of_its_type_and_same_value(store):
    book = book_on(store)
    for rid in ("r1", "r2"):
        book.schedule(f"esc|{rid}", T0 + timedelta(hours=2), 0, "c1", {"type": TimerKind.ESCALATE},
                      unless=("review.handled", "review_id", rid))
    book.schedule("any", T0 + timedelta(hours=2), 0, "c1", {"type": TimerKind.AFTER},
                  unless=("unsubscribed", None, None))
    assert book.cancel_matching("c1", review(T0, "r1", "review.created")) == 0
    assert book.cancel_matching("c2", review(T0, "r1", "review.handled")) == 0
    assert book.cancel_matching("c1", review(T0, "r1", "review.handled")) == 1
    assert book.due_of("c1", "esc|r1") is None and book.due_of("c1", "esc|r2") is not None
    assert book.cancel_matching("c1", Event(type="unsubscribed", customer_id="c1", at=T0, data={})) == 1
    assert book.due_of("c1", "any") is None


def test_the_timer_book_comes_back_from_the_store_as_it_was_written(store):
    changes = Changes()
    book = book_on(store, changes)
    trigger = review(T0)
    book.schedule("esc", T0 + timedelta(hours=2), 3, "c1",
                  {"type": TimerKind.ESCALATE, "rule": "bad-review", "step": 1, "event": trigger},
                  unless=("review.handled", "review_id", "r1"))
    book.schedule("stage", T0 + timedelta(days=1), -1, "c1", {"type": TimerKind.STAGE})
    written = {key: changes.timers_put[key] for key in ("esc", "stage")}
    with store.transaction():
        changes.flush(store, None, seq=book.seq, now=T0)
    again = book_on(store)
    assert again.seq == 2
    loaded = {timer.key: timer for timer in again.all_pending()}
    for key in ("esc", "stage"):
        assert attrs.evolve(loaded[key], payload={}) == attrs.evolve(written[key], payload={})
        assert {**loaded[key].payload, "due": None} == {**written[key].payload, "due": None}  # adds the exact due
    assert loaded["esc"].payload["type"] is TimerKind.ESCALATE and loaded["esc"].payload["event"] == trigger
    assert again.cancel_matching("c1", review(T0, "r1", "review.handled")) == 1


def test_a_timer_row_is_plain_json():
    timer = Timer("k", T0, 0, 1, "c1", {"type": TimerKind.AFTER, "rule": "r", "event": review(T0)})
    key, due, _rule_index, _seq, _customer, payload = timer.to_row()
    assert (key, due) == ("k", T0.timestamp()) and type(payload["type"]) is str
    assert json.loads(json.dumps(payload))["due"] == T0.isoformat()


def test_the_first_timers_of_a_queue_pass_over_replaced_and_removed_ones():
    """`first` sorts the heap's entries, stale ones included: a replaced timer counts once, with its
    latest order, and a removed one not at all; `of_sorted` of them fires in the same order."""
    randomness = random.Random(7)
    queue = TimerQueue()
    seq = 0
    for _ in range(400):
        seq += 1
        key = f"k{randomness.randrange(60)}"
        queue.push(Timer(key, T0 + timedelta(minutes=randomness.randrange(50)), randomness.randrange(3), seq,
                         "c1", {"type": TimerKind.STAGE}))
        if randomness.random() < 0.2:
            queue.remove(f"k{randomness.randrange(60)}")
    live = sorted(queue.values(), key=lambda timer: timer.order)
    first = queue.first(10)
    assert first == live[:10] and queue.first(len(live) + 5) == live
    again = TimerQueue.of_sorted(first)
    assert [again.pop() for _ in range(len(again))] == first


def test_timers_pushed_at_once_fire_as_if_pushed_one_by_one():
    """`push_many` (a refill of the window) gives the queue `push` would, replaced timers included."""
    randomness = random.Random(11)
    one_by_one, at_once = TimerQueue(), TimerQueue()
    seq = 0
    for _round in range(5):
        batch = []
        for _ in range(300):
            seq += 1
            batch.append(Timer(f"k{randomness.randrange(200)}", T0 + timedelta(minutes=randomness.randrange(90)),
                               randomness.randrange(3), seq, "c1", {"type": TimerKind.STAGE}))
        for timer in batch:
            one_by_one.push(timer)
        at_once.push_many(batch)
        for _ in range(40):  # some fire between refills: the next batch joins a heap with stale entries
            assert one_by_one.pop() == at_once.pop()
    assert len(one_by_one) == len(at_once)
    assert [one_by_one.pop() for _ in range(len(one_by_one))] == [at_once.pop() for _ in range(len(at_once))]


# -- changes -------------------------------------------------------------------------------
def test_a_timer_put_then_deleted_before_a_flush_is_only_deleted(store):
    changes = Changes()
    timer = Timer("k", T0, 0, 1, "c1", {"type": TimerKind.STAGE})
    changes.timer_put(timer)
    changes.timer_deleted("k")
    assert not changes.timers_put and changes.timers_deleted == {"k"}
    changes.timer_put(timer)
    assert changes.timers_put == {"k": timer} and not changes.timers_deleted


def test_flushing_writes_every_change_and_starts_over(store):
    changes = Changes()
    changes.actions["r|c1|e1"] = action(status=Status.SENT, reported_status=Status.SENT)
    changes.timer_put(Timer("k", T0, 0, 1, "c1", {"type": TimerKind.STAGE}))
    with store.transaction():
        changes.flush(store, None, seq=7, now=T0)
    assert store.get_action("r|c1|e1")["status"] == "sent" and [row[0] for row in store.iter_timers()] == ["k"]
    assert store.get_meta("seq") == 7 and store.get_meta("now") == T0.isoformat()
    assert not (changes.actions or changes.timers_put or changes.timers_deleted or changes.profiles)


# -- outbox --------------------------------------------------------------------------------
def outbox_on(store, reported, waits=None):
    return Outbox(store, Changes(), Counter(), tz=timezone.utc, on_action=reported.append, waits_for_channel=waits)


def test_a_finished_action_is_reported_once_and_seen_from_then_on(store):
    reported = []
    outbox = outbox_on(store, reported)
    outbox.load()
    draft = action()
    assert not outbox.seen(draft.key)
    outbox.finish(draft, None, Status.SENT, sent_at=T0)
    [sent] = reported
    assert draft.status is Status.PENDING  # the draft itself never changes
    assert sent.status is sent.reported_status is Status.SENT and sent.sent_at == T0 and outbox.seen(draft.key)
    assert outbox._stats == {"actions_sent": 1}


def test_an_action_that_waits_for_its_channel_is_queued_and_not_reported(store):
    reported = []
    outbox = outbox_on(store, reported, waits=lambda a, profile: attrs.evolve(a, channel="crm"))
    outbox.finish(action(kind="tag"), None, Status.SENT, sent_at=T0)
    outbox.finish(action(key="other"), None, Status.SUPPRESSED, "opt-out")
    assert [a.key for a in reported] == ["other"]
    queued = outbox._changes.actions["r|c1|e1"]
    assert queued.status is Status.QUEUED and queued.channel == "crm" and queued.reported_status is None


def test_a_held_action_is_reported_deferred_at_the_end_then_finished_on_release(store):
    reported = []
    outbox = outbox_on(store, reported)
    held = outbox.hold(action(), "cap:daily", counts_as_defer=True)
    assert held.defers == 1 and outbox.all_held() == [held] and outbox.held(held.key) == held and not reported
    outbox.report_held()
    outbox.report_held()  # once per status
    assert [(a.status, a.reason) for a in reported] == [(Status.DEFERRED, "cap:daily")]
    outbox.finish(outbox.held(held.key), None, Status.SENT, sent_at=T0 + timedelta(hours=1))
    assert outbox.all_held() == [] and outbox.held(held.key) is None
    assert [a.status for a in reported] == [Status.DEFERRED, Status.SENT]


def test_held_actions_come_back_from_the_store(store):
    outbox = outbox_on(store, [])
    outbox.hold(action(), "quiet-hours", counts_as_defer=False)
    with store.transaction():
        outbox._changes.flush(store, None, seq=0, now=None)
    again = outbox_on(store, [])
    again.load()
    assert [a.key for a in again.all_held()] == ["r|c1|e1"] and again.held("r|c1|e1").status is Status.DEFERRED
    assert again.seen("r|c1|e1")


# -- the engine's front ----------------------------------------------------------------------
def test_the_engine_tells_when_its_next_timer_is_due_and_closes_its_backend(ruleset, store):
    engine = Engine(ruleset, backend=get_backend("python")(ruleset.active_rules), store=store)
    engine.load()
    assert engine.next_due() is None
    assert engine.ingest_outcome(review(T0)) is Outcome.APPLIED
    assert engine.ingest_outcome(review(T0)) is Outcome.DUPLICATE
    assert engine.next_due() == (T0 + timedelta(hours=2)).timestamp()
    assert engine.seq == len(engine.pending_timers()) == 2
    engine.advance(T0 + timedelta(hours=3))
    assert engine.next_due() == (T0 + timedelta(hours=24)).timestamp()
    closed = []
    engine.backend.close = lambda: closed.append(True)
    engine.close()
    assert closed == [True]


def test_an_action_given_a_status_keeps_every_other_field():
    """`Action.given` copies the instance's fields rather than calling attrs.evolve, for speed: the copy
    must equal evolve's, stay frozen, and leave the original as it was."""
    action = Action(**{field.name: f"value of {field.name}" for field in attrs.fields(Action)})
    before = attrs.asdict(action)
    changes = {"status": Status.SENT, "reason": "why", "sent_at": "then", "due_at": "when", "reported_status": None}
    given = action.given(**changes)
    assert type(given) is Action and given == attrs.evolve(action, **changes)
    assert attrs.asdict(action) == before
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        given.status = Status.FAILED
