"""The per-channel send budget: waits instead of exceeding `per_minute`, per shared bucket."""
from __future__ import annotations

from helpers import FakeTime

from rulecrm.channels.ratelimit import RateLimiter


def test_a_burst_up_to_the_limit_goes_out_at_once_then_it_waits():
    t = FakeTime()
    limiter = RateLimiter(clock=t.clock, sleep=t.sleep)
    assert [limiter.acquire("robot", 3) for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("robot", 3) == 60.0  # the first token comes back a minute after it was spent
    assert t.now == 1060.0
    assert t.sleeps == [60.0]


def test_no_sixty_second_window_ever_holds_more_than_the_limit():
    t = FakeTime()
    limiter = RateLimiter(clock=t.clock, sleep=t.sleep)
    sent = []
    for i in range(50):
        t.now += 0.75 * (i % 3)  # irregular arrivals (binary-exact steps keep the comparison exact)
        limiter.acquire(("wecom-robot", "key-1"), 20)
        sent.append(t.now)
    for start in sent:
        assert sum(1 for s in sent if start - 60 < s <= start) <= 20


def test_buckets_are_independent_and_no_limit_never_waits():
    t = FakeTime()
    limiter = RateLimiter(clock=t.clock, sleep=t.sleep)
    limiter.acquire("a", 1)
    assert limiter.acquire("b", 1) == 0
    assert limiter.delay("a", 1) == 60.0
    assert all(limiter.acquire("c", None) == 0 for _ in range(100))
    assert t.sleeps == []


def test_tokens_come_back_as_time_passes():
    t = FakeTime()
    limiter = RateLimiter(clock=t.clock, sleep=t.sleep)
    limiter.acquire("k", 2)
    t.now += 30
    limiter.acquire("k", 2)
    t.now += 31  # the first send is now more than a minute old
    assert limiter.acquire("k", 2) == 0
    assert limiter.delay("k", 2) == 29.0


def test_a_tokens_minute_starts_when_the_send_finished():
    # The provider counts a message when it arrives: a slow first send must not let the 21st
    # message in before the provider's minute is over.
    t = FakeTime()
    limiter = RateLimiter(clock=t.clock, sleep=t.sleep)
    with limiter.slot("robot", 2):
        t.now += 0.5  # the first send takes half a second to arrive
    with limiter.slot("robot", 2):
        pass
    with limiter.slot("robot", 2):
        pass
    assert t.now == 1060.5  # a minute after the first send *finished*


def test_a_send_still_in_progress_keeps_its_token_past_its_minute():
    # Another worker must not take the token of a send that has not ended: the provider has not
    # counted that message yet, and its minute will run from when it arrives.
    t = FakeTime()
    limiter = RateLimiter(clock=t.clock, sleep=t.sleep)
    _waited, tokens = limiter.take("robot", 1, 1)  # a send starts at 1000 ...
    t.now += 90  # ... and is still in progress 90 s later
    assert limiter.delay("robot", 1) > 0
    limiter.settle("robot", tokens)  # it ends at 1090
    assert limiter.delay("robot", 1) == 60.0
    assert limiter.acquire("robot", 1) == 60.0 and t.now == 1150.0


def test_a_send_of_several_provider_messages_takes_that_many_tokens():
    t = FakeTime()
    limiter = RateLimiter(clock=t.clock, sleep=t.sleep)
    with limiter.slot("robot", 5, units=3):  # a long text split in three robot posts
        pass
    with limiter.slot("robot", 5, units=2):
        pass
    assert t.sleeps == []
    with limiter.slot("robot", 5, units=1):
        pass
    assert t.now == 1060.0  # the sixth post waits for the first minute to pass
