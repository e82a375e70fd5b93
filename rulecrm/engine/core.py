"""The event-time engine: applies events, fires timers in order, and decides actions.

Order within one instant T (docs/rules.md, Semantics): timers due before T fire first; then the events at T are
applied; timers due exactly at T fire only after every event at T. For one event: the profile
takes the event's built-in effect, pending timers it cancels are dropped, the lifecycle stage is
recomputed, tag/profile rules run to a fixpoint, then the event's own rules run (in rule order),
then the rules of a `stage.changed` it caused.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from datetime import datetime, time, timedelta, timezone

import attrs

from rulecrm.engine.actions import Action, action_key
from rulecrm.engine.birthdays import next_birthday
from rulecrm.engine.cache import RecentCache
from rulecrm.engine.changes import Changes
from rulecrm.engine.compiled import CompiledRules
from rulecrm.engine.enums import Outcome, Status, TimerKind
from rulecrm.engine.gates import Gates
from rulecrm.engine.lifecycle import next_change, stage_at
from rulecrm.engine.outbox import Outbox
from rulecrm.engine.profile import Profile
from rulecrm.engine.routing import Router
from rulecrm.engine.samekey import same_key
from rulecrm.engine.timerbook import TimerBook
from rulecrm.engine.timers import Timer
from rulecrm.events import Event, fingerprint
from rulecrm.expr.context import EvalContext
from rulecrm.timeutil import add_delay, fixed_offset, parse_timestamp

APPLIED, DUPLICATE, CONFLICT = Outcome.APPLIED, Outcome.DUPLICATE, Outcome.CONFLICT  # what ingest_outcome did
MAX_PROFILE_PASSES = 8  # tag rules that feed each other settle within this many passes, or stop
DEFAULT_BIRTHDAY_AT = time(9, 0)
STAGE_TIMER_ORDER = -1  # lifecycle transitions fire before rule timers due at the same instant
STAGE = frozenset({"stage"})  # what a lifecycle transition changes in `Profile.mapping()`


class Engine:
    def __init__(self, ruleset, *, backend, store, functions=None, address_fields=None, on_action=None,
                 waits_for_channel=None, on_status=None, on_timer_fired=None):
        """`on_status(action)` and `on_timer_fired(timer)` let an observer (the live runner's metrics) see
        every status given to an action and every timer fired, as it happens, before the step commits."""
        self.ruleset = ruleset
        self.backend = backend
        self.store = store
        self.functions = dict(functions or {})
        self.tz = ruleset.shop.timezone
        self.lifecycle = ruleset.lifecycle
        self.rules = CompiledRules.build(ruleset, self.functions)
        self.router = Router(ruleset, address_fields)
        self.gates = Gates(ruleset)
        # recently used customers' profiles; the store holds them all (see rulecrm.engine.cache)
        self.profiles: RecentCache[Profile] = RecentCache(self._load_profile)
        self.now: datetime | None = None
        self.firing: Timer | None = None  # the timer being fired, for attributing a failure to it
        self.stats = Counter()
        self._changes = Changes()
        self._timers = TimerBook(self._changes, store)
        # With dispatch (`replay --dispatch`, `run`), `waits_for_channel` decides which sent actions
        # wait for their channel (see Outbox). Without it, `sent` means "would have been sent".
        self._outbox = Outbox(store, self._changes, self.stats, tz=self.tz,
                              on_action=on_action or (lambda action: None), waits_for_channel=waits_for_channel,
                              on_status=on_status)
        self._on_timer_fired = on_timer_fired
        # The id of the event being applied: it was recorded just now, for the first time, so no action
        # it triggers can have been decided before this application (those are still in `changes`),
        # and looking its keys up in the store can be skipped (see _seen).
        self._fresh_trigger: str | None = None
        self._fire = {
            TimerKind.AFTER: self._fire_delayed,
            TimerKind.ESCALATE: self._fire_escalation,
            TimerKind.RELEASE: self._fire_release,
            TimerKind.STAGE: self._fire_stage,
            TimerKind.BIRTHDAY: self._fire_birthday,
        }

    # -- what callers read -----------------------------------------------------------------
    @property
    def timers(self) -> TimerBook:
        """The pending timers (read them; the engine alone changes them)."""
        return self._timers

    @property
    def seq(self) -> int:
        """Timers created so far (their tie-break order)."""
        return self._timers.seq

    def next_due(self) -> float | None:
        """Epoch seconds of the next timer to fire, or None when no timer is pending."""
        return self._timers.next_due()

    def pending_timers(self) -> list:
        """Every pending timer, in firing order (for tools and tests; the engine alone changes them)."""
        return self._timers.all_pending()

    def held_actions(self) -> dict:
        """Actions held by quiet hours or a deferring cap, by key (a copy)."""
        return {action.key: action for action in self._outbox.all_held()}

    def observe_gates(self, callback) -> None:
        """Call `callback(action, profile, now, verdict)` at each gate judgement (explain's re-run)."""
        self.gates.observe(callback)

    def zone_of(self, profile):
        """The time zone the gates use for this customer (theirs, else the shop's)."""
        return self.gates.zone(profile)

    def close(self) -> None:
        """Release the matching backend and the caches (the store belongs to the caller).

        The caches are emptied here rather than left to the collector: the engine's object graph has
        reference cycles (callbacks back into the session), and while sessions are open the cyclic
        collector runs rarely (`rulecrm.app.collector`), so a process that opens one session after
        another (the partitions of an in-process replay) would otherwise keep every closed engine's
        customers in memory."""
        self.backend.close()
        self.profiles.clear()
        self._timers.release()

    # -- state -------------------------------------------------------------------------
    def load(self) -> None:
        """Restore timers, held actions and counters from the store (a resumed or repeated run)."""
        now = self.store.get_meta("now")
        self.now = parse_timestamp(now, timezone.utc).astimezone(timezone.utc) if now else None
        self._timers.load()
        self._outbox.load()

    def flush(self) -> None:
        """Write what changed since the last flush; call inside a store transaction."""
        self._changes.flush(self.store, self.profiles.get, seq=self._timers.seq, now=self.now)
        # everything is written: the caches may let their least recently used customers go
        self.profiles.trim()
        self._timers.trim()

    def _load_profile(self, customer_id: str) -> Profile:
        stored = self.store.get_profile(customer_id)
        return Profile.from_dict(stored) if stored else Profile(customer_id)

    def profile(self, customer_id: str) -> Profile:
        return self.profiles.get(customer_id)

    def _touch(self, profile: Profile) -> None:
        profile.changed()
        self._changes.profiles.add(profile.id)

    # -- time --------------------------------------------------------------------------
    def ingest(self, event: Event) -> bool:
        """Apply one input event (inputs arrive in event-time order). False: its id was seen before."""
        return self.ingest_outcome(event) == APPLIED

    def ingest_outcome(self, event: Event) -> Outcome:
        """Apply one input event: APPLIED, DUPLICATE (this id with the same content was applied
        before) or CONFLICT (this id was applied before with different content; not applied)."""
        if not isinstance(event.at.tzinfo, timezone):
            # Durations must be exact elapsed time, even across DST changes: aware arithmetic
            # within one zone object would be wall-clock arithmetic (parsed events are already fixed).
            event = attrs.evolve(event, at=fixed_offset(event.at))
        self._fire_until(event.at, inclusive=False)
        # A store that keeps no state only needs to recognise the event again: a fingerprint will do.
        text = event.to_json() if self.store.keeps_state else fingerprint(event)
        if not self.store.record_event(event.id, event.customer_id, event.at.timestamp(), event.type, text):
            if not self._same_as_recorded(event, text):
                self.stats["id_conflicts"] += 1
                return CONFLICT
            self.stats["duplicates"] += 1
            return DUPLICATE
        if self.now is None or event.at > self.now:
            self.now = event.at
        self.stats["events"] += 1
        self._fresh_trigger = event.id
        try:
            self._apply(event)
        finally:
            self._fresh_trigger = None
        self.profile(event.customer_id).release()
        self._bound_memory()
        return APPLIED

    def _same_as_recorded(self, event: Event, text: str) -> bool:
        """Whether the event recorded under this id has this one's content (a resend, not a reuse)."""
        recorded = self.store.event_text(event.id)
        if recorded == text:  # the usual resend: the same line again
            return True
        if not self.store.keeps_state or not recorded:
            return False  # a scratch store's text is already the fingerprint
        # the same event written differently (another offset for the same instant) is still the same
        return fingerprint(Event.from_dict(json.loads(recorded), default_tz=timezone.utc)) == fingerprint(event)

    def advance(self, until: datetime, *, max_timers: int | None = None) -> bool:
        """Fire the timers due at or before `until`; True when `max_timers` were fired and more are due."""
        until = until.astimezone(timezone.utc)
        if self._fire_until(until, inclusive=True, max_timers=max_timers):
            return True
        if self.now is None or until > self.now:
            self.now = until
        return False

    def _fire_until(self, limit: datetime, *, inclusive: bool, max_timers: int | None = None) -> bool:
        """Fire due timers in order; True when it stopped after `max_timers` with more due."""
        limit_order = limit.timestamp()
        pop_due = self._timers.pop_due
        on_fired = self._on_timer_fired
        fired = 0
        while True:
            if max_timers is not None and fired >= max_timers:
                next_due = self._timers.next_due()
                return next_due is not None and next_due <= limit_order
            timer = pop_due(limit_order, inclusive=inclusive)
            if timer is None:
                return False
            fired += 1
            if self.now is None or timer.due > self.now:
                self.now = timer.due
            self.stats["timers_fired"] += 1
            if on_fired is not None:
                on_fired(timer)
            self.firing = timer  # left set if firing raises: the guarded applier sets that timer aside
            self._fire[timer.payload["type"]](timer)
            self.firing = None
            self.profile(timer.customer_id).release()
            self._bound_memory()

    def _bound_memory(self) -> None:
        """Write what changed so far when a cache is full, so that it may let customers go.

        Steps usually flush at their end; one step can still touch a great many customers (timers
        firing over a long quiet period), and memory must not grow with them. The step's
        transaction stays open: a rollback undoes these writes too.
        """
        if self.profiles.full() or self._timers.full():
            self.flush()

    def discard_timer(self, timer: Timer) -> None:
        """Drop a pending timer for good (one whose firing raised; see rulecrm.app.applying)."""
        self._timers.drop(timer.customer_id, timer.key)
        self.firing = None

    # -- events ------------------------------------------------------------------------
    def _apply(self, event: Event) -> None:
        profile = self.profile(event.customer_id)
        changed = profile.apply(event, learn_skus=self.rules.learn_skus)
        if event.type == "message.sent":
            self._record_external_send(profile, event)
        cancelled = self._timers.cancel_matching(profile.id, event)
        if cancelled:
            self.stats["timers_cancelled"] += cancelled
        if changed:
            self._touch(profile)
        if self.rules.birthday_rules and event.type == "customer.upserted" and (
            "birthday" in event.data or "timezone" in event.data
        ):
            self._schedule_birthdays(profile, event.at)
        stage_event = self._update_stage(profile, event.at, event.id)
        if stage_event:
            changed = changed | STAGE
        if changed and self._profile_rules_may_change(profile, changed):
            self._run_profile_rules(profile, event.id, event.at)
        self._run_event_rules(profile, event)
        if stage_event:
            self._run_event_rules(profile, stage_event)

    def _record_external_send(self, profile, event) -> None:
        kind = event.data.get("kind")
        channel = event.data.get("channel")
        self.gates.record_send(
            profile, kind if isinstance(kind, str) else "marketing",
            channel if isinstance(channel, str) else None, event.at,
        )
        self._touch(profile)

    def context_for(self, profile, event: Event | None = None) -> EvalContext:
        """What a rule's expressions see for this customer and trigger event (for tools like explain)."""
        if event is None:
            return self._context(profile)
        return self._context(profile, event.as_mapping(), event.data.get("sku"))

    def _context(self, profile, event_map=None, sku=None) -> EvalContext:
        rules = self.rules
        return EvalContext(
            event=event_map,
            customer=profile.mapping(),
            product=rules.product_maps.get(sku) if isinstance(sku, str) else None,
            cycle=(lambda: self._cycle(profile, sku)) if isinstance(sku, str) and sku in rules.products else None,
            functions=self.functions,
        )

    def _cycle(self, profile, sku) -> timedelta | None:
        """The product's declared cycle, or the customer's median interval once learned."""
        product = self.rules.products.get(sku) if isinstance(sku, str) else None
        if product is None:
            return None
        if product.learn_cycle:
            times = profile.order_times.get(sku, ())
            if len(times) >= product.learn_min_orders:
                intervals = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
                return timedelta(seconds=statistics.median(intervals))
        return product.cycle

    # -- rules -------------------------------------------------------------------------
    def _profile_rules_may_change(self, profile, changed: frozenset[str]) -> bool:
        """Whether evaluating the profile rules now could change anything, after `changed` fields changed.

        At the end of a settled evaluation every profile rule is at a fixpoint: each tag rule's tag is
        as its condition says, and `true_rules` holds exactly the notify rules that hold. It stays one
        while nothing the rules read changes (a tag added by an event rule re-evaluates them anyway),
        so evaluating again would only repeat the same matches: as a Rete network, only the rules whose
        inputs changed are worth a look.
        """
        reads = self.rules.profile_reads
        return not profile.settled or reads is None or not reads.isdisjoint(changed)

    def _run_profile_rules(self, profile, trigger: str, at: datetime) -> None:
        profile_rules = self.rules.profile_rules
        if not profile_rules:
            return
        profile.settled = False  # until this evaluation reaches its fixpoint
        done_tags = self.rules.profile_done_tags
        for _ in range(MAX_PROFILE_PASSES):
            if done_tags is not None and done_tags <= profile.tags:
                break  # every rule's tag is on, and none can come off: nothing left to evaluate
            ctx = self._context(profile)
            holding = {rule.id for rule in self.backend.match(None, ctx)}
            tags_changed = False
            for rule in profile_rules:
                holds = rule.id in holding
                if rule.tag:
                    tags_changed |= self._settle_tag(rule, profile, ctx, holds, trigger, at)
                if rule.notify:
                    if holds and rule.id not in profile.true_rules:
                        profile.true_rules.add(rule.id)
                        self._touch(profile)
                        self._notify(rule, rule.notify, profile, ctx, trigger, at)
                    elif not holds and rule.id in profile.true_rules:
                        profile.true_rules.discard(rule.id)
                        self._touch(profile)
            if not tags_changed:
                break
        else:
            self.stats["profile_rules_unsettled"] += 1
            return
        profile.settled = True

    def _settle_tag(self, rule, profile, ctx, holds, trigger, at) -> bool:
        untag_condition = self.rules.untag.get(rule.id)
        remove = untag_condition(ctx) if untag_condition else (rule.untag is True and not holds)
        if remove and rule.tag in profile.tags:
            self._set_tag(rule, profile, rule.tag, False, trigger, at)
            return True
        if holds and not remove and rule.tag not in profile.tags:
            self._set_tag(rule, profile, rule.tag, True, trigger, at)
            return True
        return False

    def _run_event_rules(self, profile, event: Event) -> None:
        if event.type not in self.rules.event_rule_types or event.type == "birthday":
            return
        texts = self.rules.event_texts_required[event.type]
        if texts is not None and not any(_event_field(event, field) == text for field, text in texts):
            return  # each rule on this type requires a text in a field that this event does not have
        sku = event.data.get("sku")
        ctx = self._context(profile, event.as_mapping(), sku)
        for rule in self.backend.match(event.type, ctx):
            self._trigger(rule, profile, event, ctx)

    def _trigger(self, rule, profile, event: Event, ctx) -> None:
        if rule.after is not None:
            self._schedule_delayed(rule, profile, event, ctx)
            return
        tags_changed = False
        if rule.tag and rule.tag not in profile.tags:
            self._set_tag(rule, profile, rule.tag, True, event.id, event.at)
            tags_changed = True
        if rule.notify:
            self._notify(rule, rule.notify, profile, ctx, event.id, event.at)
        if rule.escalate:
            self._schedule_escalation(rule, profile, event, ctx)
        if tags_changed:
            self._run_profile_rules(profile, event.id, event.at)

    @staticmethod
    def _correlation(unless, event) -> tuple[str, tuple | None]:
        """(key suffix, cancellation entry) for a trigger: by the `same` field, else the customer."""
        if unless is None:
            return "", None
        if unless.same is None:
            return "", (unless.event_type, None, None)
        value = event.data.get(unless.same)
        key = same_key(value)  # the equality TimerBook.cancel_matching uses too: 1 and 1.0 replace each other
        return ("null" if key is None else key), (unless.event_type, unless.same, value)

    def _schedule_delayed(self, rule, profile, event, ctx) -> None:
        delay = self.rules.after[rule.id](ctx)
        if not isinstance(delay, timedelta):
            self.stats["delays_without_duration"] += 1  # e.g. `cycle` of a product with none
            return
        due = add_delay(event.at, delay)
        if due is None:
            self.stats["delays_out_of_range"] += 1  # computed beyond 100 years (e.g. `cycle * 10000`)
            return
        suffix, unless = self._correlation(rule.unless, event)
        payload = {"type": TimerKind.AFTER, "rule": rule.id, "event": event}
        self._timers.schedule(f"after|{rule.id}|{profile.id}|{suffix}", due, rule.index, profile.id, payload, unless)

    def _schedule_escalation(self, rule, profile, event, ctx) -> None:
        suffix, unless = self._correlation(rule.escalate.unless or rule.unless, event)
        for number, _step in enumerate(rule.escalate.steps, 1):
            delay = self.rules.steps[(rule.id, number)](ctx)
            if not isinstance(delay, timedelta):
                self.stats["delays_without_duration"] += 1
                continue
            due = add_delay(event.at, delay)
            if due is None:
                self.stats["delays_out_of_range"] += 1
                continue
            payload = {"type": TimerKind.ESCALATE, "rule": rule.id, "step": number, "event": event}
            key = f"escalate|{rule.id}|{profile.id}|{suffix}|{number}"
            self._timers.schedule(key, due, rule.index, profile.id, payload, unless)

    # -- timers ------------------------------------------------------------------------
    def _timer_trigger(self, timer):
        """The rule, trigger event, profile and context of a rule timer that should still act, else None.

        A timer outlives reloads: when its rule (or the escalation step) is gone, it is dropped;
        a `recheck` that is false drops it too.
        """
        rule = self.rules.rules_by_id.get(timer.payload["rule"])
        step = timer.payload.get("step")
        if rule is None or (step is not None and (rule.escalate is None or step > len(rule.escalate.steps))):
            self.stats["timers_orphaned"] += 1
            return None
        event = timer.payload["event"]
        profile = self.profile(timer.customer_id)
        ctx = self._context(profile, event.as_mapping(), event.data.get("sku"))
        recheck = self.rules.recheck.get(rule.id)
        if recheck is not None and not recheck(ctx):
            self.stats["rechecks_failed"] += 1
            return None
        return rule, event, profile, ctx

    def _fire_delayed(self, timer: Timer) -> None:
        found = self._timer_trigger(timer)
        if found is None:
            return
        rule, event, profile, ctx = found
        if rule.tag and rule.tag not in profile.tags:
            self._set_tag(rule, profile, rule.tag, True, event.id, timer.due)
            self._run_profile_rules(profile, event.id, timer.due)
            ctx = self._context(profile, event.as_mapping(), event.data.get("sku"))
        if rule.notify:
            self._notify(rule, rule.notify, profile, ctx, event.id, timer.due)

    def _fire_escalation(self, timer: Timer) -> None:
        found = self._timer_trigger(timer)
        if found is None:
            return
        rule, event, profile, ctx = found
        number = timer.payload["step"]
        self._notify(
            rule, rule.escalate.steps[number - 1].notify, profile, ctx, event.id, timer.due,
            kind="escalate", step=number, late_by=timer.due - event.at,
        )

    def _fire_release(self, timer: Timer) -> None:
        action = self._outbox.held(timer.payload["action"])
        if action is None:
            return
        self._gate(action, self.profile(action.customer_id), timer.due)

    def _fire_stage(self, timer: Timer) -> None:
        profile = self.profile(timer.customer_id)
        trigger = f"lifecycle@{timer.due.isoformat()}"
        stage_event = self._update_stage(profile, timer.due, trigger)
        if stage_event:
            if self._profile_rules_may_change(profile, STAGE):
                self._run_profile_rules(profile, trigger, timer.due)
            self._run_event_rules(profile, stage_event)

    def _fire_birthday(self, timer: Timer) -> None:
        rule = self.rules.rules_by_id.get(timer.payload["rule"])
        if rule is None:
            return
        profile = self.profile(timer.customer_id)
        zone = self.gates.zone(profile)
        year = timer.due.astimezone(zone).year
        data = {"year": year}
        birth_year = _birth_year(profile.fields.get("birthday"))
        if birth_year:
            data["age"] = year - birth_year
        event = Event.made("birthday", profile.id, timer.due, data, f"birthday|{profile.id}|{year}")
        ctx = self._context(profile, event.as_mapping())
        if any(matched.id == rule.id for matched in self.backend.match("birthday", ctx)):
            self._trigger(rule, profile, event, ctx)
        self._schedule_birthday(rule, profile, timer.due + timedelta(seconds=1))

    def _schedule_birthdays(self, profile, not_before) -> None:
        for rule in self.rules.birthday_rules:
            self._schedule_birthday(rule, profile, not_before)

    def _schedule_birthday(self, rule, profile, not_before) -> None:
        key = f"birthday|{rule.id}|{profile.id}"
        at = rule.at or DEFAULT_BIRTHDAY_AT
        instant = next_birthday(profile.fields.get("birthday"), at, self.gates.zone(profile), not_before)
        if instant is None:
            self._timers.drop(profile.id, key)
            return
        self._timers.schedule(key, instant, rule.index, profile.id, {"type": TimerKind.BIRTHDAY, "rule": rule.id})

    # -- lifecycle ----------------------------------------------------------------------
    def _update_stage(self, profile, at: datetime, trigger: str) -> Event | None:
        new = stage_at(profile, self.lifecycle, at)
        old = profile.stage
        stage_event = None
        if new != old:
            profile.stage = new
            self._touch(profile)
            decision = action_key("lifecycle", profile.id, trigger, "stage")
            if not self._seen(decision, trigger):
                action = Action(
                    key=decision, rule="lifecycle", customer_id=profile.id, kind="stage", to=new, due_at=at,
                    rule_index=STAGE_TIMER_ORDER, trigger=trigger, message=f"{old} -> {new}",
                )
                self._outbox.finish(action, profile, Status.SENT, sent_at=at)
            stage_event = Event.made(
                "stage.changed", profile.id, at, {"from": old, "to": new},
                f"stage.changed|{profile.id}|{at.isoformat()}|{new}",
            )
        key = f"stage|{profile.id}"
        instant = next_change(profile, self.lifecycle, at)
        if instant is None:
            self._timers.drop(profile.id, key)
        elif self._timers.due_of(profile.id, key) != instant.timestamp():
            self._timers.schedule(key, instant, STAGE_TIMER_ORDER, profile.id, {"type": TimerKind.STAGE})
        return stage_event

    # -- actions -----------------------------------------------------------------------
    def _seen(self, key: str, trigger: str) -> bool:
        """Whether the action `key` (made by `trigger`) was decided before: a decision is taken once."""
        return self._outbox.seen(key, in_store=trigger != self._fresh_trigger)

    def _set_tag(self, rule, profile, tag: str, add: bool, trigger: str, at: datetime) -> None:
        (profile.tags.add if add else profile.tags.discard)(tag)
        self._touch(profile)
        kind = "tag" if add else "untag"
        key = action_key(rule.id, profile.id, trigger, kind)
        if self._seen(key, trigger):
            return
        action = Action(
            key=key, rule=rule.id, customer_id=profile.id, kind=kind, to=tag, due_at=at,
            rule_index=rule.index, trigger=trigger,
        )
        self._outbox.finish(action, profile, Status.SENT, sent_at=at)

    def _notify(self, rule, notify, profile, ctx, trigger, due, *, kind="notify", step=None, late_by=None):
        key = action_key(rule.id, profile.id, trigger, f"step{step}" if step else None)
        if self._seen(key, trigger):
            return
        route = self.router.route(notify, profile)
        action = Action(
            key=key, rule=rule.id, customer_id=profile.id, kind=kind, to=notify.to, due_at=due,
            rule_index=rule.index, trigger=trigger, channel=route.channel, address=route.address,
            message_kind=notify.resolved_kind(),
            message=notify.template.render(ctx, self.gates.zone(profile)) if notify.template is not None else None,
            step=step, late_by=late_by,
        )
        if route.address is None:
            self._outbox.finish(action, profile, Status.SUPPRESSED, "no-address")
            return
        self._gate(action, profile, due)

    def _gate(self, action: Action, profile, now: datetime) -> None:
        outbox = self._outbox
        if action.to != "customer":  # caps, quiet hours and opt-out protect the customer, not staff
            outbox.finish(action, profile, Status.SENT, sent_at=now)
            return
        verdict = self.gates.judge(action, profile, now)
        if verdict.status == Status.SENT:
            self.gates.record_send(profile, action.message_kind, action.channel, now)
            self._touch(profile)
            outbox.finish(action, profile, Status.SENT, sent_at=now)
        elif verdict.status == Status.SUPPRESSED:
            outbox.finish(action, profile, Status.SUPPRESSED, verdict.reason)
        else:
            action = outbox.hold(action, verdict.reason, counts_as_defer=verdict.counts_as_defer)
            self._timers.schedule(
                f"release|{action.key}", verdict.release_at, action.rule_index, action.customer_id,
                {"type": TimerKind.RELEASE, "action": action.key},
            )

    def report_pending(self) -> None:
        """Report actions still held (quiet hours, deferring caps) at the end of a run."""
        self._outbox.report_held()


def _event_field(event: Event, field: str):
    """What `event.<field>` reads (`Event.as_mapping`), without building the mapping."""
    if field in _ENVELOPE:
        return getattr(event, field)
    return event.data.get(field)


_ENVELOPE = frozenset({"type", "at", "customer_id", "id"})


def _birth_year(birthday) -> int | None:
    if isinstance(birthday, str) and len(birthday) >= 10 and birthday[:4].isdigit():
        return int(birthday[:4])
    return None
