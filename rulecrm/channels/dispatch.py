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

import random
import time
from collections import Counter
from datetime import datetime, timezone

import attrs

from rulecrm import plugins
from rulecrm.app.stopping import BoundedCalls, Interrupted
from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, Delivery, Message
from rulecrm.channels.instances import ChannelSet
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


class Dispatcher:
    """Delivers the outbox of one store through the channels of one rule set.

    `clock` (epoch seconds) and `sleep` are the only wall-clock uses; tests inject fakes.
    `on_report(record)` receives each action once it is `sent` or `dead` (and, from
    `report_unfinished`, the ones still `failed`); `on_warning(text)` receives plugin problems.
    With `stop` (the live runner's "asked to stop"), rate-limit waits end as soon as it is true and
    channel calls run on a worker thread whose answer is waited for at most a grace period once
    stopping (`rulecrm.app.stopping`): an attempt cut short records nothing and the row stays as it was.
    """

    def __init__(self, ruleset, manager, store, *, env=None, clock=time.time, sleep=time.sleep, seed=0,
                 max_attempts=MAX_ATTEMPTS, base_delay=BASE_DELAY, max_delay=MAX_DELAY,
                 on_report=None, on_warning=None, limiter=None, stop=None):
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
        self.limiter = limiter or RateLimiter(clock=clock, sleep=sleep, stop=stop)
        self._calls = BoundedCalls(stop) if stop is not None else None
        self.channels = ChannelSet(ruleset, manager, env=env)
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
    def due(self, limit: int = 500) -> list[dict]:
        """Committed actions ready for an attempt: every `queued`, and `failed` whose retry time came."""
        rows = []
        for row in self.store.iter_actions(status=QUEUED):
            rows.append(row)
            if len(rows) >= limit:
                return rows
        now = self.clock()
        for row in self.store.iter_actions(status=FAILED):
            if row.get("next_attempt", 0) <= now:
                rows.append(row)
                if len(rows) >= limit:
                    break
        return rows

    def next_retry(self) -> float | None:
        """The epoch time of the earliest scheduled retry, or None."""
        times = [row.get("next_attempt", 0) for row in self.store.iter_actions(status=FAILED)]
        return min(times) if times else None

    def dispatch(self, *, limit: int = 500, stop=lambda: False) -> int:
        """One pass over the due actions; returns how many delivery attempts were made."""
        made = 0
        for row in self.due(limit):
            if stop():
                break
            try:
                if self.deliver(row["key"]):
                    made += 1
            except Interrupted:  # stopping: the attempt was not started, or given up in flight
                break
        return made

    def dispatch_ready(self, *, stop=lambda: False) -> None:
        """Dispatch until nothing is due now (retries scheduled later are left for later)."""
        while self.dispatch(stop=stop) and not stop():
            pass

    def use_rules(self, ruleset) -> None:
        """Switch to the channels of reloaded rules; on error the current channels stay in use."""
        channels = ChannelSet(ruleset, self.manager, env=self.env)
        old, self.channels = self.channels, channels
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
        # Defence in depth: whatever the channel answered, its own secrets are masked before the
        # answer is stored, written to --out, shown to hooks or printed.
        delivery = self._masked(record.get("channel"), self._attempt(record))
        self.attempts += 1
        record = self._record(record, delivery)
        with self.store.transaction():
            self.store.put_actions([record])
        if record["status"] in (SENT, DEAD):
            self.counts[record["status"]] += 1
            self.on_report(public(record))
        self._observe(public(record), delivery)
        return True

    def _attempt(self, record: dict) -> Delivery:
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
        with self.limiter.slot(self.channels.rate_bucket(name), limits.per_minute, units):
            return self._deliver(instance, channel_type, name, record, message)

    def _deliver(self, instance, channel_type, name, record, message) -> Delivery:
        try:
            if record["kind"] in TAG_KINDS:
                if not channel_type.supports_tags:
                    return Delivery(PERMANENT, code="no-tag-support", detail=f"channel {name!r} does not sync tags")
                tags = (record["to"],)
                add, remove = (tags, ()) if record["kind"] == "tag" else ((), tags)
                delivery = self._call(instance.sync_tags, record["customer_id"], record["address"], add, remove)
            else:
                delivery = self._call(instance.send, message)
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
        problems = self.channels.close() if self._calls is None else self._calls.finish(self.channels.close)
        for name, exc in problems:
            self._warn(f"channel {name!r} failed to close: {type(exc).__name__}: {exc}")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
