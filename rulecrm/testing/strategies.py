"""Hypothesis strategies for rulecrm events: customers, orders, reviews, chats and whole streams.

Every strategy takes keyword-only arguments whose values are themselves strategies, so a test
shapes the data without rewriting the generator. Events come out in the JSONL form `Shop.add`
and `rulecrm replay` read: `{"id", "type", "customer_id", "at", "data"}`.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import attrs
from hypothesis import strategies as st

from rulecrm.expr.ast import Literal, Matches
from rulecrm.schema import ITEM_LIFECYCLES
from rulecrm.timeutil import parse_timestamp

__all__ = [
    "chats", "customers", "event_streams", "orders", "reviews", "timestamps",
    "DEFAULT_MIX", "DEFAULT_SKUS", "DEFAULT_TEXTS",
]

DEFAULT_START = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)).map(
    lambda moment: moment.replace(second=0, microsecond=0, tzinfo=timezone.utc)
)
DEFAULT_SPAN = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10))
DEFAULT_SKUS = ("tea-xqg", "tea-lj", "teapot-yx")
DEFAULT_TEXTS = ("hi", "近期要买", "最近有新茶吗", "buy soon", "下周再说", "stop", "多少钱", "thanks")
DEFAULT_TIMEZONES = ("Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC")
# Event types a stream draws from; repeats weight them. `order.delivered` and `review.handled`
# also follow their order or review at a drawn delay (before, exactly at a deadline, after, never).
DEFAULT_MIX = (
    "order.placed", "order.placed", "order.placed", "review.created", "review.created",
    "chat.received", "chat.received", "customer.upserted", "customer.upserted", "message.sent",
    "customer.opted_out", "customer.opted_in", "order.refunded", "contact.added", "review.handled",
)
_MADE_BY_THE_ENGINE = frozenset({"stage.changed", "birthday"})
_PLATFORMS = ("tmall", "jd", "taobao", "wecom")
_AMOUNTS = (0.0, 9.9, 128.0, 388.0, 1288.0)
_POOL = 4  # order, review and complaint ids come from small pools so they collide and correlate


@attrs.frozen
class _ShopFacts:
    """What a stream needs to know about the shop: zone, products, channels, staff, deadlines."""

    zone: object = timezone.utc
    products: tuple = ()  # (sku, category, price)
    channels: tuple = ("console",)
    owners: tuple = ("rep-a", "rep-b")
    deadlines: tuple = ()  # escalation step delays written as plain durations
    extra_types: tuple = ()  # `on:` types of the rules that are not built in
    texts: tuple = ()  # words the rules look for in chats

    @classmethod
    def of(cls, ruleset) -> "_ShopFacts":
        if ruleset is None:
            return cls()
        deadlines, texts = set(), set()
        for rule in ruleset.active_rules:
            for step in rule.escalate.steps if rule.escalate else ():
                if isinstance(step.after, Literal) and isinstance(step.after.value, timedelta):
                    deadlines.add(step.after.value)
            if rule.on == "chat.received":
                texts.update(_words(rule.when))
        return cls(
            zone=ruleset.shop.timezone,
            products=tuple((p.sku, p.category, p.price) for p in ruleset.products),
            channels=tuple(sorted({"console", *(c.name for c in ruleset.channels)})),
            owners=("rep-a", *(c.name for c in ruleset.contacts)),
            deadlines=tuple(sorted(deadlines)),
            extra_types=extra_types(ruleset),
            texts=tuple(sorted(texts)),
        )


def extra_types(ruleset) -> tuple[str, ...]:
    """Event types the rules act on or wait for that DEFAULT_MIX leaves out (complaints, custom types)."""
    wanted = set()
    for rule in ruleset.active_rules:
        wanted.add(rule.on)
        for unless in (rule.unless, rule.escalate.unless if rule.escalate else None):
            if unless is not None:
                wanted.add(unless.event_type)
    return tuple(sorted(t for t in wanted if t and t not in DEFAULT_MIX and t not in _MADE_BY_THE_ENGINE))


def _words(tree) -> set[str]:
    """Plain words in a condition's string literals and `matches` alternatives (e.g. "近期|soon")."""
    found, stack = set(), [tree]
    while stack:
        node = stack.pop()
        text = node.pattern if isinstance(node, Matches) else getattr(node, "value", None)
        if isinstance(node, (Literal, Matches)) and isinstance(text, str):
            found.update(w for w in text.split("|") if w and not re.search(r"[\\^$.*+?()\[\]{}]", w))
        if isinstance(node, Literal) and isinstance(node.value, tuple):
            stack.extend(node.value)
        elif attrs.has(type(node)):
            stack.extend(getattr(node, f.name) for f in attrs.fields(type(node)))
        elif isinstance(node, (tuple, list)):
            stack.extend(node)
    return found


# -- single events ---------------------------------------------------------------------
def timestamps(*, start=DEFAULT_START, span=DEFAULT_SPAN) -> st.SearchStrategy[str]:
    """ISO 8601 instants (with offset) between a drawn `start` and `start + span`."""

    @st.composite
    def build(draw):
        origin = _aware(draw(start))
        minutes = int(draw(span).total_seconds() // 60)
        return (origin + timedelta(minutes=draw(st.integers(0, max(minutes, 0))))).isoformat()

    return build()


def _envelope(type_, data, customer_id, at):
    return st.builds(
        lambda cid, when, payload: {"type": type_, "customer_id": cid, "at": when, "data": payload},
        customer_id, at, data,
    )


_CUSTOMER_IDS = st.sampled_from(["c-1", "c-2", "c-3"])


def customers(
    *, customer_id=_CUSTOMER_IDS, at=None, ruleset=None, names=None, owners=None, birthdays=None,
    timezones=None, channels=None,
) -> st.SearchStrategy[dict]:
    """`customer.upserted` events with a drawn subset of name, owner, birthday, timezone, channel."""
    facts = _ShopFacts.of(ruleset)
    data = _profile_data(facts, None, names=names, owners=owners, birthdays=birthdays, timezones=timezones,
                         channels=channels)
    return _envelope("customer.upserted", data, customer_id, _or(at, timestamps()))


def orders(*, customer_id=_CUSTOMER_IDS, at=None, ruleset=None, skus=None, amounts=None,
           platforms=None) -> st.SearchStrategy[dict]:
    """`order.placed` events; skus (and their category and price) from `ruleset`'s products when given."""
    facts = _ShopFacts.of(ruleset)
    return _envelope("order.placed", _order_data(facts, skus, amounts, platforms), customer_id, _or(at, timestamps()))


def reviews(*, customer_id=_CUSTOMER_IDS, at=None, ratings=None, texts=None) -> st.SearchStrategy[dict]:
    """`review.created` events with a rating (default 1–5) and review/order ids from small pools."""
    return _envelope("review.created", _review_data(ratings, texts), customer_id, _or(at, timestamps()))


def chats(*, customer_id=_CUSTOMER_IDS, at=None, ruleset=None, texts=None) -> st.SearchStrategy[dict]:
    """`chat.received` events; texts include the words the rules' chat conditions look for."""
    facts = _ShopFacts.of(ruleset)
    return _envelope("chat.received", _chat_data(facts, texts), customer_id, _or(at, timestamps()))


def _profile_data(facts, origin, *, names=None, owners=None, birthdays=None, timezones=None, channels=None):
    if birthdays is None:
        near = [] if origin is None else [
            (origin + timedelta(days=n)).strftime(pattern)
            for n in (0, 1, 3) for pattern in ("%m-%d", "1992-%m-%d")  # a leap year: 29 February exists
        ]
        birthdays = st.sampled_from(["02-29", "1992-02-29", "--12-31", *near])
    zones = _or(timezones, st.sampled_from(sorted({getattr(facts.zone, "key", "UTC"), *DEFAULT_TIMEZONES})))
    return st.fixed_dictionaries({}, optional={
        "name": _or(names, st.sampled_from(["王芳", "李强", "Ada"])),
        "owner": _or(owners, st.sampled_from(facts.owners)),
        "birthday": birthdays,
        "timezone": zones,
        "channel": _or(channels, st.sampled_from(facts.channels)),
    })


def _order_data(facts, skus, amounts, platforms):
    products = {sku: (category, price) for sku, category, price in facts.products}
    sku_strategy = _or(skus, st.sampled_from(sorted(products) or DEFAULT_SKUS))

    def build(sku, order_n, amount, platform):
        category, price = products.get(sku, ("tea" if str(sku).startswith("tea-") else "teaware", None))
        data = {"order_id": f"o{order_n}", "sku": sku, "amount": price if price is not None else amount,
                "platform": platform}
        if category is not None:
            data["category"] = category
        return data

    return st.builds(build, sku_strategy, st.integers(1, _POOL), _or(amounts, st.sampled_from(_AMOUNTS)),
                     _or(platforms, st.sampled_from(_PLATFORMS)))


def _review_data(ratings, texts):
    return st.builds(
        lambda n, order_n, rating, text: {"review_id": f"r{n}", "order_id": f"o{order_n}", "rating": rating,
                                          "text": text},
        st.integers(1, _POOL), st.integers(1, _POOL), _or(ratings, st.integers(1, 5)),
        _or(texts, st.sampled_from(["太苦了", "ok", "great"])),
    )


def _chat_data(facts, texts):
    return st.builds(lambda text: {"text": text},
                     _or(texts, st.sampled_from(sorted({*DEFAULT_TEXTS, *facts.texts}))))


# -- streams ---------------------------------------------------------------------------
def event_streams(
    *, ruleset=None, customers=st.integers(1, 4), size=st.integers(0, 30), start=DEFAULT_START,
    span=DEFAULT_SPAN, mix=None, ratings=st.integers(1, 5), skus=None, texts=None, aware=st.booleans(),
) -> st.SearchStrategy[list[dict]]:
    """Time-ordered lists of events for a few customers, with ties (several events at one instant).

    customers: how many customers (ids c-1, c-2, ...); size: how many drawn events at most (at least half as many)
    (follow-ups such as a delivery or a handled review come on top); start/span: the instants drawn lie in
    [start, start + span] (follow-ups may fall outside); mix: the event type of each drawn event
    (default DEFAULT_MIX plus the types the rules act on or wait for that it leaves out); ratings: review ratings; skus:
    ordered skus (default: the ruleset's products); texts: chat texts; aware: whether an event's
    `at` carries an offset (else it is naive local time of the shop, as ops exports often are).
    Given `ruleset`, the stream uses its time zone, products, channels, contacts as owners, the
    words its chat rules look for, and its escalation deadlines (reviews handled exactly then).
    """
    facts = _ShopFacts.of(ruleset)
    type_strategy = _or(mix, st.sampled_from(DEFAULT_MIX + facts.extra_types))

    @st.composite
    def build(draw):
        count = draw(customers)
        origin = _aware(draw(start))
        minutes = max(int(draw(span).total_seconds() // 60), 0)
        instants = draw(st.lists(st.integers(0, minutes), min_size=1, max_size=4))
        offset = st.one_of(st.sampled_from(instants), st.integers(0, minutes))
        item = st.tuples(
            offset, st.integers(1, max(count, 1)), type_strategy, st.data(), aware,
        )
        most = draw(size)
        drawn = draw(st.lists(item, min_size=most // 2, max_size=most))
        timed = []  # (instant, draw order, type, customer, data, aware)
        for n, (minute, customer, type_, data_draw, is_aware) in enumerate(drawn):
            at = origin + timedelta(minutes=minute)
            cid = f"c-{customer}"
            data = data_draw.draw(_data_for(type_, facts, origin, ratings, skus, texts))
            timed.append((at, n, 0, type_, cid, data, is_aware))
            follow = data_draw.draw(_follow_up(type_, facts))
            if follow is not None:
                follow_type, delay = follow
                keys = (ITEM_LIFECYCLES[type_][0], "order_id") if type_ in ITEM_LIFECYCLES else (
                    "order_id", "sku", "category")
                follow_data = {k: data[k] for k in keys if k in data}
                timed.append((at + delay, n, 1, follow_type, cid, follow_data, data_draw.draw(aware)))
        timed.sort(key=lambda item: (item[0], item[1], item[2]))
        return [
            {"id": f"e{n}", "type": type_, "customer_id": cid, "at": _render(at, facts.zone, is_aware), "data": data}
            for n, (at, _order, _follow, type_, cid, data, is_aware) in enumerate(timed, 1)
        ]

    return build()


def _data_for(type_, facts, origin, ratings, skus, texts):
    if type_ == "customer.upserted":
        return _profile_data(facts, origin)
    if type_ == "order.placed":
        return _order_data(facts, skus, None, None)
    if type_ in ("order.delivered", "order.refunded"):
        return _order_data(facts, skus, None, None).map(
            lambda d: {k: v for k, v in d.items() if k in ("order_id", "sku", "category", "amount")})
    if type_ == "review.created":
        return _review_data(ratings, None)
    if type_ == "review.handled":
        return st.builds(lambda n: {"review_id": f"r{n}"}, st.integers(1, _POOL))
    if type_ == "chat.received":
        return _chat_data(facts, texts)
    if type_ == "message.sent":
        return st.fixed_dictionaries({}, optional={
            "kind": st.sampled_from(["marketing", "service"]), "channel": st.sampled_from(facts.channels)})
    if type_ == "contact.added":
        return st.fixed_dictionaries({"owner": st.sampled_from(facts.owners)})
    if type_ in ("complaint.opened", "complaint.resolved"):
        return st.builds(lambda n: {"complaint_id": f"k{n}"}, st.integers(1, _POOL))
    return st.just({})


def _follow_up(type_, facts):
    """A later (or earlier) companion event: a review's handling, an order's delivery, or none."""
    if type_ in ITEM_LIFECYCLES:  # a review handled, a complaint resolved: before, at or after its deadlines
        edges = [d + s for d in facts.deadlines for s in (-timedelta(minutes=1), timedelta(0), timedelta(minutes=1))]
        delays = sorted({-timedelta(hours=1), timedelta(0), timedelta(minutes=30), timedelta(days=3), *edges})
        closing = ITEM_LIFECYCLES[type_][1]
        return st.one_of(st.none(), st.sampled_from(delays).map(lambda d: (closing, d)))
    if type_ == "order.placed":
        delays = [timedelta(hours=1), timedelta(days=1), timedelta(days=3)]
        return st.one_of(st.none(), st.sampled_from(delays).map(lambda d: ("order.delivered", d)))
    return st.none()


def _or(given, default):
    """A strategy argument, or the default when it was not given."""
    return default if given is None else given


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _render(at: datetime, zone, aware: bool) -> str:
    """`at` with the shop's offset, or as naive shop-local time when that reads back the same."""
    local = at.astimezone(zone)
    if not aware:
        naive = local.replace(tzinfo=None).isoformat()
        if parse_timestamp(naive, zone) == at:
            return naive
    return local.isoformat()
