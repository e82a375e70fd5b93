"""The baseline of bench B1: rules/cdnow/cdnow.yaml hard-coded as one plain-Python event-time loop."""
from __future__ import annotations

import heapq
import json
import statistics
import sys
from datetime import datetime, timezone

UTC = timezone.utc
DAY = 86_400.0
CYCLE = 60 * DAY  # product cd: declared cycle until the customer has LEARN_MIN orders of it
LEARN_MIN = 3
DORMANT, CHURNED = 90 * DAY, 180 * DAY
CAP_PER = 7 * DAY  # marketing-weekly: at most 1 sent marketing message in (t - 7d, t]
CAP_REASON = "cap:marketing-weekly"
STAGE, REPURCHASE = -1, 3  # timer tie order: stage transitions first, then the repurchase rule


class Customer:
    __slots__ = ("id", "orders", "spent", "last_at", "times", "tags", "stage", "last_marketing")

    def __init__(self, customer_id: str):
        self.id = customer_id
        self.orders = 0
        self.spent = 0.0
        self.last_at = None
        self.times = []  # epoch seconds of every order (all orders are of sku "cd")
        self.tags = set()
        self.stage = "new"
        self.last_marketing = None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _stage(c: Customer, now: float) -> str:
    idle = now - c.last_at
    if idle >= CHURNED:
        return "churned"
    if idle >= DORMANT:
        return "dormant"
    if c.orders >= 5:
        return "mature"
    return "growing" if c.orders >= 2 else "new"


class Replay:
    def __init__(self, out=None):
        self.out = out
        self.customers: dict[str, Customer] = {}
        self.heap: list = []  # (due, tie order, seq, customer id)
        self.live: dict = {}  # (tie order, customer id) -> (seq, due, payload)
        self.seq = 0
        self.counts = {"sent": 0, "suppressed": 0}

    def emit(self, key, rule, c, kind, to, at, trigger, message=None, message_kind=None, status="sent", reason=None):
        self.counts[status] += 1
        if self.out is None:
            return
        notify = message_kind is not None
        due = _iso(at)
        self.out.write(json.dumps({
            "key": key, "rule": rule, "customer_id": c.id, "kind": kind,
            "channel": "console" if notify else None, "to": to, "address": c.id if notify else None,
            "due_at": due, "sent_at": due if status == "sent" else None, "status": status, "reason": reason,
            "message": message, "message_kind": message_kind, "trigger": trigger,
            "step": None, "late_by": None, "late_seconds": None, "defers": 0,
        }, ensure_ascii=False) + "\n")

    def schedule(self, order, c, due, payload=None):
        self.seq += 1
        self.live[(order, c.id)] = (self.seq, due, payload)
        heapq.heappush(self.heap, (due, order, self.seq, c.id))

    def fire_until(self, limit: float, inclusive: bool):
        heap, live = self.heap, self.live
        while heap:
            due, order, seq, cid = heap[0]
            if due > limit or (due == limit and not inclusive):
                return
            heapq.heappop(heap)
            entry = live.get((order, cid))
            if entry is None or entry[0] != seq:
                continue  # replaced or cancelled
            del live[(order, cid)]
            c = self.customers[cid]
            if order == STAGE:
                self.stage_timer(c, due)
            else:
                event_id, quantity = entry[2]
                self.marketing("repurchase", c, due, event_id, f"New releases for you (last time: {quantity} CDs)")

    def marketing(self, rule, c, at, trigger, message):
        key = f"{rule}|{c.id}|{trigger}"
        if c.last_marketing is not None and c.last_marketing > at - CAP_PER:
            self.emit(key, rule, c, "notify", "customer", at, trigger, message, "marketing", "suppressed", CAP_REASON)
        else:
            c.last_marketing = at
            self.emit(key, rule, c, "notify", "customer", at, trigger, message, "marketing")

    def set_stage(self, c, new, at, trigger):
        old, c.stage = c.stage, new
        self.emit(f"lifecycle|{c.id}|{trigger}|stage", "lifecycle", c, "stage", new, at, trigger, f"{old} -> {new}")

    def stage_timer(self, c, at):
        new = _stage(c, at)
        if new != c.stage:
            self.set_stage(c, new, at, f"lifecycle@{_iso(at)}")
            if new == "dormant":  # win-back, on stage.changed to dormant
                trigger = f"stage.changed|{c.id}|{_iso(at)}|dormant"
                self.marketing("win-back", c, at, trigger, "We miss you")
        for threshold in (DORMANT, CHURNED):
            if c.last_at + threshold > at:
                self.schedule(STAGE, c, c.last_at + threshold)
                return

    def order(self, event: dict, at: float):
        cid, data, event_id = event["customer_id"], event["data"], event["id"]
        c = self.customers.get(cid)
        if c is None:
            c = self.customers[cid] = Customer(cid)
        amount = data["amount"]
        c.orders += 1
        c.spent += amount
        c.last_at = at
        c.times.append(at)
        self.live.pop((REPURCHASE, cid), None)  # unless: order.placed same sku
        new = _stage(c, at)
        if new != c.stage:
            self.set_stage(c, new, at, event_id)
        stage_timer = self.live.get((STAGE, cid))
        if stage_timer is None or stage_timer[1] != at + DORMANT:
            self.schedule(STAGE, c, at + DORMANT)
        if c.orders >= 2 and "repeat-buyer" not in c.tags:
            c.tags.add("repeat-buyer")
            self.emit(f"repeat-buyer|{cid}|{event_id}|tag", "repeat-buyer", c, "tag", "repeat-buyer", at, event_id)
        if c.spent >= 100 and "big-spender" not in c.tags:
            c.tags.add("big-spender")
            self.emit(f"big-spender|{cid}|{event_id}|tag", "big-spender", c, "tag", "big-spender", at, event_id)
        if amount >= 50:
            self.emit(f"thank-big-order|{cid}|{event_id}", "thank-big-order", c, "notify", "customer", at,
                      event_id, f"Thanks for your order of ${amount:.2f}", "service")
        times = c.times
        if len(times) >= LEARN_MIN:
            cycle = statistics.median([b - a for a, b in zip(times, times[1:], strict=False)])
        else:
            cycle = CYCLE
        self.schedule(REPURCHASE, c, at + max(cycle, 0), (event_id, data["quantity"]))


def run(events_path, out=None) -> dict:
    """Replay the CDNOW events file with the cdnow rules; write actions as JSONL to `out`; counts."""
    events = []
    with open(events_path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines):
            event = json.loads(line)
            at = datetime.fromisoformat(event["at"]).replace(tzinfo=UTC).timestamp()
            events.append((at, line_no, event))
    events.sort(key=lambda item: (item[0], item[1]))
    replay = Replay(out)
    for at, _line_no, event in events:
        replay.fire_until(at, inclusive=False)
        replay.order(event, at)
    if events:
        replay.fire_until(events[-1][0], inclusive=True)
    return {"events": len(events), **replay.counts}


if __name__ == "__main__":
    print(run(sys.argv[1], sys.stdout), file=sys.stderr)
