"""A synthetic shop's event history, for benches B3 and B8 (memory and throughput at scale).

    python -m bench.synthetic_shop --customers N --out FILE.jsonl [--seed S] [--events-per-customer 5]
        [--start 2024-01-01] [--years 2] [--shuffle-window 0]

Customers sign up over the whole period and then live a plausible life with the shop whose rules
are in bench/synthetic-shop: profile upserts (phone, e-mail, birthday or time zone for some), orders
of products with different repurchase cycles, deliveries, reviews (bad ones handled within hours,
late, or never), refunds, chats, newsletter sends, opt-outs and opt-ins. The file is sorted by `at`,
every event has a unique `id`, and the same arguments always give the same bytes. With
`--shuffle-window N` the lines are shuffled within blocks of N, for the external sort of unsorted input.
The events per customer come within a few percent of `--events-per-customer` from 2 to about 10;
beyond that the period cannot hold enough orders and the file falls short (about 14 for 15).

Memory does not grow with the number of customers. Writing in time order straight from a heap of
each customer's next event would keep every customer with a future event in memory, which over two
years is nearly all of them. Instead each customer's whole life is generated at once and its events
are spilled to files by time slice (about EVENTS_PER_SLICE events each, so their number grows with
the shop); the slices are then sorted one at a time, in memory, and concatenated.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from operator import itemgetter
from pathlib import Path

import orjson

DAY = 86_400
HOUR = 3_600
# The shop's zone, Asia/Shanghai, has had no DST since 1991: one fixed offset fits every timestamp.
OFFSET = "+08:00"

EVENTS_PER_SLICE = 100_000  # events sorted in memory at once
MAX_SLICES = 500  # open slice files; beyond this the slices grow instead
_KEY_DIGITS = 10  # a spilled line starts with its time in seconds, zero-padded: sorting the prefix sorts by time
_SLICE_KEY = itemgetter(slice(0, _KEY_DIGITS))


@dataclass(frozen=True)
class Product:
    sku: str
    category: str
    cycle_days: int | None  # as declared in bench/synthetic-shop/00-shop.yaml
    price: float
    popularity: float  # relative share of the orders


CATALOGUE = (
    Product("coffee-beans", "coffee", 21, 88.0, 30),
    Product("drip-bags", "coffee", 14, 45.0, 20),
    Product("green-tea", "tea", 30, 128.0, 20),
    Product("puer-cake", "tea", 60, 268.0, 10),
    Product("filters", "supplies", 90, 25.0, 8),
    Product("grinder", "equipment", None, 399.0, 6),
    Product("gift-box", "gift", None, 198.0, 6),
)
NO_CYCLE_GAP_DAYS = 45  # typical gap after an order of a product without a cycle

# Share of the day's activity per local hour: busiest in the evening, some of it inside the quiet
# hours (22:00-08:00), so that reminders due at those times are held.
HOUR_WEIGHTS = (2, 1, 1, .5, .5, .5, 1, 2, 4, 6, 7, 7, 6, 5, 5, 5, 5, 6, 7, 8, 9, 9, 8, 5)
RATINGS = ((5, .55), (4, .20), (3, .10), (2, .07), (1, .08))
PLATFORMS = ("tmall", "jd", "wecom", "web")
OWNERS = ("rep-an", "rep-bo", "rep-chen")
ZONES = ("Europe/London", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney", "Asia/Singapore")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN_NAMES = ("芳", "伟", "娜", "敏", "静", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "秀英",
               "霞", "平", "刚", "桂英", "Anna", "Leo", "Mia")
REVIEW_TEXTS = {
    5: ("Perfect, as always", "非常好喝", "Fast delivery, lovely aroma"),
    4: ("Good, packaging could be better", "不错"),
    3: ("OK, nothing special", "味道一般"),
    2: ("Arrived late and the bag was torn", "包装破了"),
    1: ("Stale beans, want a refund", "茶叶受潮了", "Wrong item sent"),
}
CHAT_TEXTS = ("Do you ship to Hangzhou?", "What grind for a moka pot?", "发票怎么开？", "Is the gift box in stock?",
              "How long does the tea keep?")
INTENT_CHAT_TEXTS = ("I'll order again soon", "下周再买两盒", "Will you restock the puer cake?", "近期想买个磨豆机")

# The life of a customer. Shares are probabilities; delays are in seconds.
NEVER_ORDERS = 0.15  # sign up and never buy
KEEP_SKU = 0.7  # the next order is of the same product
DELIVERED = 0.95
REFUNDED = 0.02
REVIEWED = 0.30  # of the delivered orders
CHATS = ((0, .70), (1, .20), (2, .10))
OPTS_OUT = 0.04
OPTS_BACK_IN = 0.4  # of those who opted out
UPDATES_PROFILE = 0.10  # a second upsert later
NEWSLETTERS = ((0, .75), (1, .20), (2, .05))  # newsletter sends (message.sent) a customer gets
NEWSLETTER_EVERY_DAYS = 28  # the shop's newsletter goes out on these days at 10:00
# The mean number of orders is tuned on a sample until the events per customer come to the target:
# the other events are fixed by the shares above, and the end of the period cuts off more of a
# customer's orders the more they are.
ORDER_TYPES = frozenset({"order.placed", "order.delivered", "order.refunded", "review.created", "review.handled"})
CALIBRATION_CUSTOMERS = 2_000
CALIBRATION_ROUNDS = 4


def _slots(weighted_items, per_unit: int = 1) -> tuple:
    """Each item repeated weight x per_unit times: a uniform pick among the slots is a weighted pick
    (faster than searching cumulative weights)."""
    return tuple(item for item, weight in weighted_items for _ in range(round(weight * per_unit)))


class _Draw:
    """The random choices of the model, all from one seeded generator (the only source of randomness)."""

    def __init__(self, seed: int):
        self.random = random.Random(seed).random
        self._hours = _slots(enumerate(HOUR_WEIGHTS), per_unit=2)  # the weights are halves
        self._products = _slots((p, p.popularity) for p in CATALOGUE)
        self._ratings = _slots(RATINGS, per_unit=100)

    def moment(self, day: int) -> int:
        """A time on `day` (days since the start) at an hour following HOUR_WEIGHTS, in seconds since the start."""
        return day * DAY + self.pick(self._hours) * HOUR + int(self.random() * HOUR)

    def days_later(self, t: int, low: int, high: int) -> int:
        """A moment `low` to `high - 1` days after the day of `t`, and after `t` itself."""
        later = self.moment(t // DAY + self.between(low, high))
        return later if later > t else later + DAY

    def product(self) -> Product:
        return self.pick(self._products)

    def rating(self) -> int:
        return self.pick(self._ratings)

    def between(self, low: float, high: float) -> int:
        return int(low + self.random() * (high - low))

    def pick(self, items):
        return items[int(self.random() * len(items))]

    def count(self, table) -> int:
        """A small count from ((value, share), ...)."""
        u = self.random()
        for value, share in table:
            u -= share
            if u < 0:
                return value
        return table[-1][0]

    def geometric(self, mean: float) -> int:
        """0, 1, 2, ... with the given mean."""
        if mean <= 0:
            return 0
        return int(math.log(1.0 - self.random()) / math.log(mean / (1.0 + mean)))


class _Customer:
    """Collects one customer's events as (seconds since the start, id, type, data), dropping those past the end."""

    __slots__ = ("id", "span", "events", "_next")

    def __init__(self, customer_id: str, span: int):
        self.id = customer_id
        self.span = span
        self.events: list[tuple[int, str, str, dict]] = []  # (t, id, type, data)
        self._next = 0

    @property
    def next_id(self) -> str:
        """The id the next event added will have (orders and reviews carry their own event's id)."""
        return f"{self.id}-{self._next}"

    def add(self, t: int, type_: str, data: dict) -> str | None:
        """The new event's id, or None when it falls after the period (then it is not kept)."""
        if t >= self.span:
            return None
        event_id = f"{self.id}-{self._next}"  # as next_id, without a second call on this hot path
        self._next += 1
        self.events.append((t, event_id, type_, data))
        return event_id


class ShopModel:
    """Generates the life of customer after customer; see the module's docstring."""

    def __init__(self, *, seed: int, orders_per_customer: float, start: date, days: int):
        self.draw = _Draw(seed)
        self.span = days * DAY
        self.days = days
        self.start = start
        orders = max(0.0, orders_per_customer)  # drawn, before the end of the period cuts some off
        self.never_orders = max(NEVER_ORDERS, 1.0 - orders)  # few orders: more customers who never buy
        buyers = 1.0 - self.never_orders
        self.extra_orders = max(0.0, orders / buyers - 1.0) if buyers > 0 else 0.0

    def customer(self, index: int) -> _Customer:
        """Customer `index` with every event of theirs within the period, in the order made."""
        draw = self.draw
        customer = _Customer(f"c{index}", self.span)
        joined = draw.moment(draw.between(0, self.days))
        customer.add(joined, "customer.upserted", self._profile(index))
        if draw.random() >= self.never_orders:
            self._orders(customer, draw.days_later(joined, 0, 3), 1 + draw.geometric(self.extra_orders))
        for _ in range(draw.count(CHATS)):
            self._chat(customer, draw.days_later(joined, 0, 300))
        if draw.random() < OPTS_OUT:
            self._opt_out(customer, draw.days_later(joined, 1, 365))
        if draw.random() < UPDATES_PROFILE:
            customer.add(draw.days_later(joined, 10, 400), "customer.upserted", self._profile_update())
        for _ in range(draw.count(NEWSLETTERS)):
            self._newsletter(customer, joined)
        return customer

    def _profile(self, index: int) -> dict:
        draw = self.draw
        data = {"name": draw.pick(SURNAMES) + draw.pick(GIVEN_NAMES), "source": draw.pick(PLATFORMS)}
        if draw.random() < 0.7:
            data["phone"] = f"+861{38 + index % 10}{index % 100_000_000:08d}"
        if draw.random() < 0.35:
            data["email"] = f"customer{index}@example.com"
        if draw.random() < 0.3:
            data["birthday"] = self._birthday()
        if draw.random() < 0.03:
            data["timezone"] = draw.pick(ZONES)
        if draw.random() < 0.25:
            data["owner"] = draw.pick(OWNERS)
        return data

    def _birthday(self) -> str:
        """With a year for two thirds of them (an adult's, before the period), else month and day only."""
        draw = self.draw
        month, day = draw.between(1, 13), draw.between(1, 29)  # day 29+ would need a valid-date check
        if draw.random() < 2 / 3:
            return f"{max(1900, self.start.year - draw.between(18, 65))}-{month:02d}-{day:02d}"
        return f"{month:02d}-{day:02d}"

    def _profile_update(self) -> dict:
        draw = self.draw
        choice = draw.random()
        if choice < 0.5:
            return {"birthday": self._birthday()}
        if choice < 0.9:
            return {"email": f"new-{int(draw.random() * 1e9)}@example.com"}
        return {"timezone": draw.pick(ZONES)}

    def _orders(self, customer: _Customer, first_at: int, count: int) -> None:
        draw = self.draw
        product = draw.product()
        at = first_at
        for number in range(count):
            if number:
                at = self._next_order_at(at, product)
                if draw.random() >= KEEP_SKU:
                    product = draw.product()
            if not self._order(customer, at, product):
                return  # the period is over

    def _next_order_at(self, last: int, product: Product) -> int:
        """Often before the reminder (cancelling it), often after, sometimes late enough for the customer
        to turn dormant."""
        draw = self.draw
        days = product.cycle_days or NO_CYCLE_GAP_DAYS
        u = draw.random()
        if u < 0.45:
            factor = 0.55 + 0.35 * draw.random()
        elif u < 0.85:
            factor = 1.0 + 0.8 * draw.random()
        else:
            factor = 2.5 + 3.5 * draw.random()
        gap = int(days * factor)
        return draw.days_later(last, gap, gap + 1)

    def _order(self, customer: _Customer, at: int, product: Product) -> bool:
        draw = self.draw
        quantity = 1 if draw.random() < 0.7 else draw.between(2, 4)
        amount = round(product.price * quantity * (0.8 + 0.2 * draw.random()), 2)
        order_id = customer.next_id
        data = {"order_id": order_id, "sku": product.sku, "category": product.category, "amount": amount,
                "quantity": quantity, "platform": draw.pick(PLATFORMS)}
        if customer.add(at, "order.placed", data) is None:
            return False
        if draw.random() >= DELIVERED:
            return True
        delivered = (at // DAY + draw.between(1, 6)) * DAY + draw.between(9 * HOUR, 20 * HOUR)  # office hours
        if customer.add(delivered, "order.delivered", {"order_id": order_id, "sku": product.sku,
                                                       "category": product.category}) is None:
            return True
        if draw.random() < REFUNDED:
            customer.add(delivered + draw.between(HOUR, 10 * DAY), "order.refunded",
                         {"order_id": order_id, "sku": product.sku, "amount": amount})
        if draw.random() < REVIEWED:
            self._review(customer, delivered + draw.between(2 * HOUR, 7 * DAY), order_id)
        return True

    def _review(self, customer: _Customer, at: int, order_id: str) -> None:
        draw = self.draw
        rating = draw.rating()
        review_id = customer.next_id
        data = {"review_id": review_id, "order_id": order_id, "rating": rating, "text": draw.pick(REVIEW_TEXTS[rating])}
        if customer.add(at, "review.created", data) is None:
            return
        delay = self._handling_delay(rating)
        if delay is not None:
            customer.add(at + delay, "review.handled", {"review_id": review_id, "order_id": order_id, "by": "cs"})

    def _handling_delay(self, rating: int) -> int | None:
        """Bad reviews: most handled before the first escalation (2h), some late, a fifth never."""
        draw = self.draw
        u = draw.random()
        if rating <= 2:
            if u < 0.45:
                return draw.between(20 * 60, 110 * 60)
            if u < 0.70:
                return draw.between(150 * 60, 22 * HOUR)
            if u < 0.80:
                return draw.between(25 * HOUR, 72 * HOUR)
            return None
        if rating == 3 and u < 0.5:
            return draw.between(HOUR, 30 * HOUR)
        return None

    def _chat(self, customer: _Customer, at: int) -> None:
        draw = self.draw
        texts = INTENT_CHAT_TEXTS if draw.random() < 0.25 else CHAT_TEXTS
        customer.add(at, "chat.received", {"text": draw.pick(texts), "from": "wecom"})

    def _opt_out(self, customer: _Customer, at: int) -> None:
        draw = self.draw
        if customer.add(at, "customer.opted_out", {"reason": "too many messages"}) is None:
            return
        if draw.random() < OPTS_BACK_IN:
            customer.add(at + draw.between(30 * DAY, 180 * DAY), "customer.opted_in", {})

    def _newsletter(self, customer: _Customer, joined: int) -> None:
        """One of the shop's newsletters after the customer joined (the caps count it)."""
        draw = self.draw
        first = joined // (NEWSLETTER_EVERY_DAYS * DAY) + 1
        last = self.days // NEWSLETTER_EVERY_DAYS
        if first > last:
            return
        day = draw.between(first, last + 1) * NEWSLETTER_EVERY_DAYS
        customer.add(day * DAY + 10 * HOUR + draw.between(0, 1800), "message.sent",
                     {"kind": "marketing", "channel": "wecom", "text": "This month's new arrivals"})


def orders_per_customer(events_per_customer: float, *, seed: int, start: date, days: int) -> float:
    """The mean number of orders to draw for `events_per_customer` events per customer on average."""
    orders = 1.0
    for _ in range(CALIBRATION_ROUNDS):
        model = ShopModel(seed=seed, orders_per_customer=orders, start=start, days=days)
        events = order_events = 0
        for index in range(CALIBRATION_CUSTOMERS):
            kept = model.customer(index).events
            events += len(kept)
            order_events += sum(1 for event in kept if event[2] in ORDER_TYPES)
        wanted = events_per_customer * CALIBRATION_CUSTOMERS - (events - order_events)
        orders *= max(wanted, 0) / max(order_events, 1)
    return orders


class _Timestamps:
    """ISO 8601 text of a time in seconds since the start, from two tables (formatting each is slow)."""

    def __init__(self, start: date, days: int):
        self.days = [(start + timedelta(days=n)).isoformat() + "T" for n in range(days)]
        self.clock = [f"{h:02d}:{m:02d}:{s:02d}{OFFSET}" for h in range(24) for m in range(60) for s in range(60)]


class _TimeSlices:
    """Event lines spilled to one file per time slice; `sorted_slices` reads them back in time order."""

    def __init__(self, directory: Path, span: int, expected_events: int, stamps: _Timestamps):
        count = max(1, min(MAX_SLICES, math.ceil(expected_events / EVENTS_PER_SLICE)))
        self._width = math.ceil(span / count)
        self._paths = [directory / f"slice-{n:04d}" for n in range(count)]
        self._files = [open(path, "wb", buffering=1 << 16) for path in self._paths]
        self._writes = [file.write for file in self._files]
        self._stamps = stamps

    def add_customer(self, customer: _Customer) -> None:
        """Each event as a JSON line after its time (the sort key), in its slice's file."""
        write, width, days, clock = self._writes, self._width, self._stamps.days, self._stamps.clock
        dumps = orjson.dumps
        customer_id = customer.id
        for t, event_id, type_, data in customer.events:
            at = days[t // DAY] + clock[t % DAY]
            event = {"id": event_id, "type": type_, "customer_id": customer_id, "at": at, "data": data}
            write[t // width](b"%010d%b\n" % (t, dumps(event)))

    def sorted_slices(self):
        """The lines of each slice sorted by time; ties keep the order they were made in (a stable sort)."""
        for file in self._files:
            file.close()
        for path in self._paths:
            lines = path.read_bytes().splitlines(keepends=True)
            path.unlink()
            lines.sort(key=_SLICE_KEY)
            yield [line[_KEY_DIGITS:] for line in lines]


class _Shuffler:
    """Writes lines shuffled within consecutive blocks of `window` lines (0: unchanged), for unsorted input."""

    def __init__(self, out, window: int, seed: int):
        self._out = out
        self._window = window
        self._rng = random.Random(f"shuffle-{seed}")
        self._block: list[bytes] = []

    def write_all(self, slices) -> None:
        """Writes the lines of each list in `slices`, in order or shuffled; ends with the last block."""
        for lines in slices:
            if self._window <= 1:
                self._out.writelines(lines)
                continue
            for line in lines:
                self._block.append(line)
                if len(self._block) >= self._window:
                    self._flush()
        self._flush()

    def _flush(self) -> None:
        self._rng.shuffle(self._block)
        self._out.writelines(self._block)
        self._block.clear()


def period_days(start: date, years: int) -> int:
    """Days from `start` to the same date `years` later (28 February when that year has no 29th)."""
    try:
        end = start.replace(year=start.year + years)
    except ValueError:
        end = start.replace(year=start.year + years, day=28)
    return (end - start).days


def generate(customers: int, out_path, *, seed: int = 1, events_per_customer: float = 5.0,
             start: date = date(2024, 1, 1), years: int = 2, shuffle_window: int = 0) -> int:
    """Write the shop's events to `out_path` (sorted by `at` unless shuffled); returns how many."""
    out_path = Path(out_path)
    days = period_days(start, years)
    orders = orders_per_customer(events_per_customer, seed=seed, start=start, days=days)
    model = ShopModel(seed=seed, orders_per_customer=orders, start=start, days=days)
    written = 0
    # the slices go next to the output: the same disk, not a /tmp that may live in memory
    with tempfile.TemporaryDirectory(prefix=".synthetic-shop-", dir=out_path.parent) as scratch, _no_gc():
        slices = _TimeSlices(Path(scratch), model.span, int(customers * events_per_customer),
                             _Timestamps(start, days))
        for index in range(customers):
            customer = model.customer(index)
            slices.add_customer(customer)
            written += len(customer.events)
        with open(out_path, "wb") as out:
            _Shuffler(out, shuffle_window, seed).write_all(slices.sorted_slices())
    return written


@contextlib.contextmanager
def _no_gc():
    """The generator makes no reference cycles, and collecting passes over the millions of short-lived
    objects it makes cost an eighth of its time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic_shop", description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, required=True)
    parser.add_argument("--out", required=True, help="the events file to write (JSON lines)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events-per-customer", type=float, default=5.0,
                        help="on average (default 5; at least 2: the events besides orders come to about 1.7)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1), help="first day (2024-01-01)")
    parser.add_argument("--years", type=int, default=2, help="length of the history, 1 to 100 (default 2)")
    parser.add_argument("--shuffle-window", type=int, default=0,
                        help="shuffle the lines within blocks of this many (default 0: sorted by time)")
    args = parser.parse_args(argv)
    if args.customers < 0 or args.shuffle_window < 0:
        parser.error("--customers and --shuffle-window cannot be negative")
    if not 1 <= args.years <= 100 or args.events_per_customer < 2:
        parser.error("--years must be 1 to 100 and --events-per-customer at least 2")
    started = time.perf_counter()
    count = generate(args.customers, args.out, seed=args.seed, events_per_customer=args.events_per_customer,
                     start=args.start, years=args.years, shuffle_window=args.shuffle_window)
    seconds = time.perf_counter() - started
    print(f"wrote {count} events of {args.customers} customers to {args.out} in {seconds:.2f}s "
          f"({count / seconds if seconds else 0:,.0f} events/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
