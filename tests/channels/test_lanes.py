"""The workers behind concurrent delivery (`rulecrm.channels.lanes`): how many a channel wakes.

A lane handed to a channel while one of its workers is awake goes to that worker: a fast channel
runs on one thread instead of switching threads at every send. Lanes that wait WAKE_AFTER seconds
get workers of their own, up to the channel's concurrency, so a slow channel still sends in parallel.
Both are asserted without timing: WAKE_AFTER is set out of reach, or to zero.
"""
from __future__ import annotations

import threading

import pytest

from rulecrm.channels import lanes as lanes_module
from rulecrm.channels.lanes import Lanes

CONCURRENCY = 4


def run_all(lanes: Lanes, expected: int, *, timeout: float = 10.0) -> list:
    """Take answers (giving each slot back) until `expected` came in."""
    answers = []
    while len(answers) < expected:
        got = lanes.finished(timeout=timeout)
        assert got, f"no answer within {timeout}s: {len(answers)} of {expected}"
        for row, answer, recorded in got:
            answers.append((row["key"], answer))
            recorded()
    return answers


def noting_send(senders: list, then=None):
    """A channel call that notes the worker it runs on, then calls `then()` (if given) before answering."""
    def send(row, admitted):
        senders.append(threading.current_thread().name)
        if then is not None:
            then()
        return "sent"
    return send


def submit(lanes: Lanes, channel: str, concurrency: int, count: int) -> None:
    """`count` lanes of one action each, one customer each."""
    for n in range(count):
        lanes.submit(channel, concurrency, (channel, f"c{n}"), [{"key": f"k{n}"}])


def test_lanes_handed_while_a_worker_is_awake_go_to_that_worker(monkeypatch):
    monkeypatch.setattr(lanes_module, "WAKE_AFTER", 3600.0)  # never long enough to wake another
    release = threading.Event()
    senders: list = []
    # the first send holds its worker awake while the other lanes are handed
    lanes = Lanes(admit=lambda row: None, send=noting_send(senders, lambda: release.wait(10)))
    try:
        submit(lanes, "file", CONCURRENCY, 10)
        release.set()
        answers = run_all(lanes, 10)
    finally:
        lanes.close()
    assert sorted(key for key, _answer in answers) == sorted(f"k{n}" for n in range(10))
    assert len(set(senders)) == 1, f"one awake worker takes every lane; used {sorted(set(senders))}"


def test_lanes_left_waiting_get_workers_up_to_the_concurrency(monkeypatch):
    monkeypatch.setattr(lanes_module, "WAKE_AFTER", 0.0)  # any lane still waiting gets a worker
    all_in_flight = threading.Barrier(CONCURRENCY, timeout=10)
    senders: list = []
    # passes only once CONCURRENCY sends run at the same time
    lanes = Lanes(admit=lambda row: None, send=noting_send(senders, all_in_flight.wait))
    try:
        submit(lanes, "hook", CONCURRENCY, CONCURRENCY)
        answers = run_all(lanes, CONCURRENCY)
    finally:
        lanes.close()
    assert all(answer == "sent" for _key, answer in answers), answers  # a broken barrier raises in send
    assert len(set(senders)) == CONCURRENCY


@pytest.mark.parametrize("wake_after", [0.0, 3600.0])
def test_a_channel_never_has_more_workers_than_its_concurrency(monkeypatch, wake_after):
    monkeypatch.setattr(lanes_module, "WAKE_AFTER", wake_after)
    senders: list = []
    lanes = Lanes(admit=lambda row: None, send=noting_send(senders))
    try:
        submit(lanes, "hook", CONCURRENCY, 50)
        run_all(lanes, 50)
    finally:
        lanes.close()
    assert 1 <= len(set(senders)) <= CONCURRENCY


def test_lanes_waiting_for_a_free_slot_wake_no_other_worker(monkeypatch):
    """Every slot awaits its answer's recording: a woken worker could only wait for a slot too."""
    monkeypatch.setattr(lanes_module, "WAKE_AFTER", 3600.0)  # while the first two sends are made
    senders: list = []
    lanes = Lanes(admit=lambda row: None, send=noting_send(senders))
    try:
        submit(lanes, "file", 2, 6)
        unrecorded = []
        while len(unrecorded) < 2:  # both slots used; the answers are not recorded yet
            unrecorded.extend(lanes.finished(timeout=5))
        monkeypatch.setattr(lanes_module, "WAKE_AFTER", 0.0)  # from now on any waiting lane counts
        for _ in range(3):  # the owner looks again and again while 4 lanes wait for a slot
            assert lanes.finished(timeout=0.05) == []
        for _row, _answer, recorded in unrecorded:
            recorded()
        answers = run_all(lanes, 4)
    finally:
        lanes.close()
    assert len(answers) == 4
    assert len(set(senders)) == 1, f"only the awake worker sends; used {sorted(set(senders))}"
