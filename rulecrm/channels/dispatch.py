"""Delivery from the outbox: hands committed `queued` actions to channels and records their answers.

Status flow of an action that passed every gate (docs/running.md):

    queued --DELIVERED--> sent
    queued --RETRYABLE--> failed --(backoff, retry)--> sent | failed | dead (after max_attempts)
    queued --PERMANENT / unknown channel type--> dead

The engine writes `queued` in the same transaction as the state change that decided the action; this
module only reads committed rows, sends, then commits the answer in a transaction of its own. A crash
between the send and that commit leaves the row `queued`/`failed`, so the send is repeated after a
restart (at least once); the channel gets the action key in `Message.key` to drop the repeat, and a
key whose row says `sent` is never handed to a channel again.
"""
from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import attrs

from rulecrm import plugins
from rulecrm.app.stopping import POLL, SEND_GRACE, BoundedCalls, Interrupted
from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, Delivery, Message
from rulecrm.channels.instances import ChannelSet
from rulecrm.channels.lanes import NOT_STARTED, Lanes
from rulecrm.channels.ratelimit import RateLimiter
from rulecrm.masking import mask_secrets

QUEUED, SENT, FAILED, DEAD = "queued", "sent", "failed", "dead"
TAG_KINDS = ("tag", "untag")
MESSAGE_KINDS = ("notify", "escalate")
MAX_ATTEMPTS = 5
BASE_DELAY = 2.0  # seconds before the first retry; doubles each attempt
MAX_DELAY = 600.0
MAX_ERROR = 1000  # characters of a delivery's error kept in the outbox (cut after masking)
_BOOKKEEPING = ("reported", "reported_status", "rule_index", "next_attempt")
_ORDER = ("key", "rule", "customer_id", "kind", "channel", "to", "address", "due_at", "sent_at", "status", "reason",
          "message", "message_kind", "trigger", "step", "late_by", "late_seconds", "defers")


def backoff(key: str, attempt: int, *, seed: int = 0, base: float = BASE_DELAY, cap: float = MAX_DELAY,
            retry_after: float | None = None) -> float:
    """Seconds before retrying after failed attempt number `attempt` (1, 2, ...).

    Exponential (base·2^(attempt−1), at most `cap`) with "equal jitter": half fixed, half drawn
    from a generator seeded by (seed, key, attempt), so a schedule is reproducible; never sooner
    than the provider's `retry_after`.
    """
    raw = min(cap, base * 2 ** (attempt - 1))
    jitter = random.Random(f"{seed}|{key}|{attempt}").uniform(0, raw / 2)
    return max(raw / 2 + jitter, retry_after or 0.0)


def public(record: dict) -> dict:
    """An outbox row as `--out` writes it: the fields in `Action.public_dict` order, then delivery fields."""
    ordered = {k: record[k] for k in _ORDER if k in record}
    ordered.update((k, v) for k, v in record.items() if k not in ordered and k not in _BOOKKEEPING)
    return ordered


@attrs.frozen
class _Admitted:
    """A send cleared to go: what to call, and the rate-limit tokens it spent."""

    instance: Any
    channel_type: Any
    name: str
    message: Message | None
    bucket: tuple
    tokens: list


HANDED_PER_SLOT = 4  # actions handed to a channel's workers at a time, per unit of its concurrency


class Dispatcher:
    """Delivers the outbox of one store through the channels of one rule set.

    `clock` (epoch seconds) and `sleep` are the only wall-clock uses; tests inject fakes.
    `on_report(record)` receives each action once it is `sent` or `dead` (and, from
    `report_unfinished`, the ones still `failed`); `on_warning(text)` receives plugin problems.
    With `stop` (the live runner's "asked to stop"), rate-limit waits end as soon as it is true, no
    further send starts, and the answers of sends in flight are waited for at most a grace period
    (`rulecrm.app.stopping`): an attempt cut short records nothing and the row stays as it was.

    Sends run concurrently (`rulecrm.channels.lanes`): across channels, and within a channel on up to
    its `concurrency` workers, a customer's sends on one channel one at a time in decision order.
    Only this object's thread touches the store: it starts the due sends and records their answers.
    `on_send_timed(channel, seconds)` gets the duration of each send that got an answer (on the thread
    that sent it; the live runner's metrics).
    """

    def __init__(self, ruleset, manager, store, *, env=None, clock=time.time, sleep=time.sleep, seed=0,
                 max_attempts=MAX_ATTEMPTS, base_delay=BASE_DELAY, max_delay=MAX_DELAY,
                 on_report=None, on_warning=None, limiter=None, stop=None, on_send_timed=None):
        self.manager = manager
        self.store = store
        self.env = env
        self.clock = clock
        self.sleep = sleep
        self.seed = seed
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.on_report = on_report or (lambda record: None)
        self.on_warning = on_warning or (lambda text: None)
        self.on_send_timed = on_send_timed or (lambda channel, seconds: None)
        self.limiter = limiter or RateLimiter(clock=clock, sleep=sleep, stop=stop)
        self._stop = stop or (lambda: False)
        self._calls = BoundedCalls(stop) if stop is not None else None  # for `deliver`, on this thread
        self._lanes = Lanes(admit=self._admit, send=self._send, stop=self._stop)
        self._abandoned = False  # a stop gave up sends still in flight: their answers are never recorded
        self.channels = ChannelSet(ruleset, manager, env=env)
        self._stored_channels: set[str] | None = None  # channels of waiting actions in the store, read on first use
        self._next_retry_of: dict[str, float] = {}  # channel -> earliest retry time of its failed actions
        self.counts: Counter = Counter()  # final statuses reported
        self.attempts = 0

    # -- the engine side ----------------------------------------------------------------
    def waits_for_channel(self, action, profile):
        """Engine callback: the action, having passed every gate, as it waits for a channel, or None.

        Messages always wait. Tag actions do when the customer's preferred channel (`channel` profile
        field) syncs tags; the action is then routed there. Other tag and stage actions stay `sent`
        with no channel: nothing outside rulecrm needs to hear about them.
        """
        if action.kind in MESSAGE_KINDS:
            return action
        if action.kind not in TAG_KINDS:
            return None
        name = profile.fields.get("channel")
        channel_type = self.channels.tag_channel(name) if isinstance(name, str) else None
        if channel_type is None:
            return None
        field = channel_type.address_field
        address = profile.fields.get(field) if field else profile.id
        if not isinstance(address, str) or not address:
            return None
        return attrs.evolve(action, channel=name, address=address)

    # -- delivering ---------------------------------------------------------------------
    def _waiting(self, channel: str, *, skip=frozenset()):
        """(customer_id, stored text) of `channel`'s committed actions ready for an attempt: every
        `queued`, then `failed` whose retry time came (keys in `skip`, the sends in flight, are passed
        over). Undecoded, and read lazily: a pump stops reading once the channel's hand is full."""
        for customer_id, _next, text in self.store.iter_waiting_actions(QUEUED, channel, skip_keys=skip):
            yield customer_id, text
        now = self.clock()
        if now < self._next_retry_of.get(channel, 0):
            return  # none of its failed actions is due yet: not read again until one is
        earliest = math.inf
        for customer_id, next_attempt, text in self.store.iter_waiting_actions(FAILED, channel, skip_keys=skip):
            if (next_attempt or 0) <= now:
                earliest = 0
                yield customer_id, text
            else:
                earliest = min(earliest, next_attempt)
        # read to the end with nothing due: a channel that keeps failing costs a pump nothing until its
        # earliest retry (an answer that fails an action of the channel forgets this)
        self._next_retry_of[channel] = earliest

    def _channels_to_read(self) -> list[str]:
        """The channels whose waiting actions a pump reads: those of the rules, and those that waiting
        actions in the store named when the channels were last set up (a channel a reload removed)."""
        if self._stored_channels is None:
            self._stored_channels = self.store.waiting_channels(QUEUED) | self.store.waiting_channels(FAILED)
        names = set(self.channels.type_of) | set(self.channels.declared) | self._stored_channels
        return sorted(names)

    def next_retry(self) -> float | None:
        """The epoch time of the earliest scheduled retry, or None."""
        times = [row.get("next_attempt", 0) for row in self.store.iter_actions(status=FAILED)]
        return min(times) if times else None

    @property
    def in_flight(self) -> int:
        """Sends started and not answered (or not recorded) yet."""
        return self._lanes.in_flight

    def start_due(self, *, limit: int = 500) -> int:
        """Start an attempt for each due action whose lane is free; returns how many started.

        A lane is one customer on one channel: while one of its sends runs, its later actions wait,
        so they start in decision order (the outbox's order).
        """
        if self._abandoned or self._stop():
            return 0
        # A channel is handed at most HANDED_PER_SLOT x its concurrency actions at a time: the rest
        # wait in the store, so a backlog costs each pump nothing (it would otherwise be read, and
        # passed over, at every pump) and a slow channel's backlog leaves the others' actions in reach.
        room = {name: HANDED_PER_SLOT * self.channels.concurrency(name) - handed
                for name, handed in self._lanes.handed.items()}
        lanes: dict[tuple, list[dict]] = {}
        read = 0
        for channel in self._channels_to_read():
            left = room.get(channel, HANDED_PER_SLOT * self.channels.concurrency(channel))
            if left <= 0:
                continue  # its backlog stays in the store, unread
            for customer_id, text in self._waiting(channel, skip=self._lanes.keys_in_flight):
                read += 1
                lane = (channel, customer_id)
                if lane not in lanes:  # a lane goes whole (its order), so only a new one needs room
                    if left <= 0 or read > limit:
                        break
                    if self._lanes.busy(lane):
                        continue
                    left -= 1
                    lanes[lane] = []
                lanes[lane].append(self.store.action_from_text(text))
        for lane, rows in lanes.items():
            self._lanes.submit(lane[0], self.channels.concurrency(lane[0]), lane, rows)
        return sum(len(rows) for rows in lanes.values())

    def record_answers(self, *, timeout: float | None = 0.0) -> int:
        """Record the answers that came in (waiting up to `timeout` for one), all in one transaction;
        returns how many."""
        if self._abandoned:
            return 0
        finished = self._lanes.finished(timeout)
        try:
            answered = []
            for row, answer, _done in finished:
                if answer is NOT_STARTED:
                    continue  # a stop kept it from starting: the row stays as it was
                if isinstance(answer, BaseException):  # a bug in the dispatcher's own code on the worker
                    answer = Delivery(RETRYABLE, code="exception", detail=f"{type(answer).__name__}: {answer}")
                answered.append((row, answer))
            self._record_answers(answered)
        finally:
            for _row, _answer, done in finished:
                done()  # only now may another send of the channel start (at most `concurrency` unrecorded)
        return len(answered)

    def pump(self) -> int:
        """Without waiting: record the answers that came in, then start what is due. Returns both counts."""
        return self.record_answers() + self.start_due()

    def wait_in_flight(self, *, stop=lambda: False) -> int:
        """Record answers until no send is in flight; returns how many were recorded.

        Once `stop()` (or the dispatcher's own stop) is true, the sends in flight get SEND_GRACE
        seconds; then they are given up (raises Interrupted) and their rows stay as they were.
        """
        recorded = 0
        deadline = None
        while self._lanes.in_flight and not self._abandoned:
            recorded += self.record_answers(timeout=POLL)
            if deadline is None and (stop() or self._stop()):
                deadline = time.monotonic() + SEND_GRACE
            if deadline is not None and self._lanes.in_flight and time.monotonic() >= deadline:
                self._abandoned = True
                raise Interrupted(f"stopping: {self._lanes.in_flight} send(s) still running after {SEND_GRACE:g}s "
                                  "were given up")
        return recorded

    def dispatch(self, *, limit: int = 500, stop=lambda: False) -> int:
        """One pass: start the due actions, then wait for every answer; returns how many were recorded."""
        if stop():
            return 0
        try:
            self.start_due(limit=limit)
            return self.wait_in_flight(stop=stop)
        except Interrupted:  # stopping: what was not answered in the grace period stays as it was
            return 0

    def dispatch_ready(self, *, stop=lambda: False) -> None:
        """Dispatch until nothing is due now (retries scheduled later are left for later)."""
        while self.dispatch(stop=stop) and not stop():
            pass

    def use_rules(self, ruleset) -> None:
        """Switch to the channels of reloaded rules; on error the current channels stay in use."""
        channels = ChannelSet(ruleset, self.manager, env=self.env)
        try:
            self.wait_in_flight()  # the old channels are closed below: no send may still be using them
        except Interrupted:
            pass
        old, self.channels = self.channels, channels
        self._stored_channels = None  # read again: actions of a channel the reload removed
        self._next_retry_of.clear()
        secrets = old.all_secrets()
        for name, exc in old.close():
            self.on_warning(mask_secrets(f"channel {name!r} failed to close: {type(exc).__name__}: {exc}", secrets))

    def drain(self, *, deadline: float | None = None) -> None:
        """Dispatch until nothing is queued or waiting for a retry (or the next retry is after `deadline`)."""
        while True:
            self.dispatch_ready()
            upcoming = self.next_retry()
            if upcoming is None or (deadline is not None and upcoming > deadline):
                return
            wait = upcoming - self.clock()
            if wait > 0:
                self.sleep(wait)

    def deliver(self, key: str) -> bool:
        """One attempt for one action, read again from the store; False when it was not due any more."""
        record = self.store.get_action(key)
        if record is None or record.get("status") not in (QUEUED, FAILED):
            return False  # e.g. already `sent`: never hand a sent key to a channel again
        self._record_answer(record, self._attempt_masked(record, call=self._call))
        return True

    def _attempt_masked(self, record: dict, *, call=None) -> Delivery:
        """One whole attempt on this thread: wait for a send token, then send."""
        return self._send(record, self._admit(record), call=call)

    def _record_answer(self, record: dict, delivery: Delivery) -> None:
        self._record_answers([(record, delivery)])

    def _record_answers(self, answered: list[tuple[dict, Delivery]]) -> None:
        """Write the attempts' outcomes in one transaction, then report the final ones and tell observers."""
        if not answered:
            return
        self.attempts += len(answered)
        records = [(self._record(record, delivery), delivery) for record, delivery in answered]
        with self.store.transaction():
            self.store.put_actions([record for record, _delivery in records])
        for record, delivery in records:
            if record["status"] == FAILED:  # a new retry time: the channel's failed actions are read again
                self._next_retry_of.pop(record.get("channel") or "", None)
            if record["status"] in (SENT, DEAD):
                self.counts[record["status"]] += 1
                self.on_report(public(record))
            self._observe(public(record), delivery)

    def _admit(self, record: dict) -> _Admitted | Delivery:
        """Everything before the send: the channel, the message, and a send token (waited for).

        A Delivery instead when the action cannot be sent (its channel cannot deliver). Lanes call
        this in the order the sends became ready, so a scarce budget goes to the oldest action first.
        """
        instance, channel_type = self.channels.get(record.get("channel"))
        if instance is None:
            return Delivery(PERMANENT, code="unknown-channel", detail=channel_type)
        name = record["channel"]
        message = None
        if record["kind"] not in TAG_KINDS:
            message = Message(
                key=record["key"], channel=name, address=record["address"], text=record.get("message") or "",
                kind=record.get("message_kind") or "service", customer_id=record["customer_id"], rule=record["rule"],
            )
        # An instance may pace itself (e.g. a webhook's own `per_minute`); a send may take several of
        # the provider's messages (a long WeCom text is split): `units(message)` says how many.
        limits = getattr(instance, "limits", None) or channel_type.limits
        units = 1
        if message is not None and hasattr(instance, "units"):
            try:
                units = max(1, int(instance.units(message)))
            except Exception:  # a channel that cannot count its parts is paced as one message
                units = 1
        bucket = self.channels.rate_bucket(name)
        _waited, tokens = self.limiter.take(bucket, limits.per_minute, units)
        return _Admitted(instance, channel_type, name, message, bucket, tokens)

    def _send(self, record: dict, admitted: _Admitted | Delivery, *, call=None) -> Delivery:
        """The send itself (on a lane's worker, or on this thread with `call`), its answer masked."""
        if isinstance(admitted, Delivery):
            return self._masked(record.get("channel"), admitted)
        started = time.monotonic()
        try:
            delivery = self._deliver(admitted.instance, admitted.channel_type, admitted.name, record,
                                     admitted.message, call or _direct)
        finally:
            self.limiter.settle(admitted.bucket, admitted.tokens)
        self.on_send_timed(admitted.name, time.monotonic() - started)  # a send given up at a stop raised: not timed
        # Defence in depth: whatever the channel answered, its own secrets are masked before the
        # answer is stored, written to --out, shown to hooks or printed.
        return self._masked(admitted.name, delivery)

    def _deliver(self, instance, channel_type, name, record, message, call) -> Delivery:
        try:
            if record["kind"] in TAG_KINDS:
                if not channel_type.supports_tags:
                    return Delivery(PERMANENT, code="no-tag-support", detail=f"channel {name!r} does not sync tags")
                tags = (record["to"],)
                add, remove = (tags, ()) if record["kind"] == "tag" else ((), tags)
                delivery = call(instance.sync_tags, record["customer_id"], record["address"], add, remove)
            else:
                delivery = call(instance.send, message)
        except Exception as exc:  # a crashing channel is a failed attempt, retried like any other
            return Delivery(RETRYABLE, code="exception", detail=f"{type(exc).__name__}: {exc}")
        if not isinstance(delivery, Delivery):
            return Delivery(PERMANENT, code="bad-answer",
                            detail=f"channel {name!r} returned {delivery!r}, not a Delivery")
        return delivery

    def _masked(self, name, delivery: Delivery) -> Delivery:
        secrets = self.channels.secrets(name)
        return attrs.evolve(delivery, code=mask_secrets(delivery.code, secrets),
                            detail=mask_secrets(delivery.detail, secrets, limit=MAX_ERROR))

    def _warn(self, text: str) -> None:
        self.on_warning(mask_secrets(text, self.channels.all_secrets()))

    def _record(self, record: dict, delivery: Delivery) -> dict:
        attempts = record.get("attempts", 0) + 1
        now = self.clock()
        record = {**record, "attempts": attempts, "code": delivery.code, "last_attempt_at": _iso(now)}
        record.pop("next_attempt", None)
        record.pop("next_attempt_at", None)
        if delivery.status == DELIVERED:
            record.update(status=SENT, error=None, delivered_at=_iso(now))
        elif delivery.status == RETRYABLE and attempts < self.max_attempts:
            wait = backoff(record["key"], attempts, seed=self.seed, base=self.base_delay, cap=self.max_delay,
                           retry_after=delivery.retry_after)
            record.update(status=FAILED, error=delivery.detail or delivery.status,
                          next_attempt=now + wait, next_attempt_at=_iso(now + wait))
        else:
            error = delivery.detail or delivery.status
            if delivery.status == RETRYABLE:
                error = f"gave up after {attempts} attempts: {error}"
            record.update(status=DEAD, error=error)
        return record

    def _observe(self, action: dict, delivery: Delivery) -> None:
        """Call every `rulecrm_action_dispatched` implementation; a failing one is reported by name."""
        # plugin by plugin in pluggy's order, so one failing observer neither hides nor stops the others
        for plugin, call in plugins.hook_callers(self.manager, "rulecrm_action_dispatched"):
            try:
                call(action=action, delivery=delivery)
            except Exception as exc:
                name = plugins.plugin_name(self.manager, plugin)
                self._warn(f"plugin {name!r} failed in rulecrm_action_dispatched: {type(exc).__name__}: {exc}")

    def report_unfinished(self) -> None:
        """Report the actions still `failed` (their retries are left to a later run)."""
        for row in self.store.iter_actions(status=FAILED):
            self.counts[FAILED] += 1
            self.on_report(public(row))

    def _call(self, function, *args):
        return function(*args) if self._calls is None else self._calls(function, *args)

    def close(self) -> None:
        """Wait for the sends in flight (a stop gives them SEND_GRACE seconds), then close the channels."""
        try:
            self.wait_in_flight()
        except Interrupted:
            pass  # given up: their rows stay as they were, to be sent again (with their keys) after a restart
        self._lanes.close()
        if self._abandoned:
            problems = _close_within_grace(self.channels.close)
        else:
            problems = self.channels.close() if self._calls is None else self._calls.finish(self.channels.close)
        for name, exc in problems:
            self._warn(f"channel {name!r} failed to close: {type(exc).__name__}: {exc}")


def _direct(function, *args):
    return function(*args)


def _close_within_grace(close) -> list:
    """Close the channels on a thread of their own, waited for SEND_GRACE seconds: a channel may still be
    busy in a call given up at a stop."""
    result: list = []
    closer = threading.Thread(target=lambda: result.extend(close()), name="rulecrm-channel-close", daemon=True)
    closer.start()
    closer.join(SEND_GRACE)
    return result


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
