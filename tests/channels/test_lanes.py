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


def test_lanes_handed_while_a_worker_is_awake_go_to_that_worker(monkeypatch):
    monkeypatch.setattr(lanes_module, "WAKE_AFTER", 3600.0)  # never long enough to wake another
    release = threading.Event()
    senders = []

    def send(row, admitted):
        senders.append(threading.current_thread().name)
        release.wait(10)  # the first send holds its worker awake while the other lanes are handed
        return "sent"

    lanes = Lanes(admit=lambda row: None, send=send)
    try:
        for n in range(10):
            lanes.submit("file", CONCURRENCY, ("file", f"c{n}"), [{"key": f"k{n}"}])
        release.set()
        answers = run_all(lanes, 10)
    finally:
        lanes.close()
    assert sorted(key for key, _answer in answers) == sorted(f"k{n}" for n in range(10))
    assert len(set(senders)) == 1, f"one awake worker takes every lane; used {sorted(set(senders))}"


def test_lanes_left_waiting_get_workers_up_to_the_concurrency(monkeypatch):
    monkeypatch.setattr(lanes_module, "WAKE_AFTER", 0.0)  # any lane still waiting gets a worker
    all_in_flight = threading.Barrier(CONCURRENCY, timeout=10)
    senders = set()

    def send(row, admitted):
        senders.add(threading.current_thread().name)
        all_in_flight.wait()  # passes only once CONCURRENCY sends run at the same time
        return "sent"

    lanes = Lanes(admit=lambda row: None, send=send)
    try:
        for n in range(CONCURRENCY):
            lanes.submit("hook", CONCURRENCY, ("hook", f"c{n}"), [{"key": f"k{n}"}])
        answers = run_all(lanes, CONCURRENCY)
    finally:
        lanes.close()
    assert all(answer == "sent" for _key, answer in answers), answers  # a broken barrier raises in send
    assert len(senders) == CONCURRENCY


@pytest.mark.parametrize("wake_after", [0.0, 3600.0])
def test_a_channel_never_has_more_workers_than_its_concurrency(monkeypatch, wake_after):
    monkeypatch.setattr(lanes_module, "WAKE_AFTER", wake_after)
    senders = set()

    def send(row, admitted):
        senders.add(threading.current_thread().name)
        return "sent"

    lanes = Lanes(admit=lambda row: None, send=send)
    try:
        for n in range(50):
            lanes.submit("hook", CONCURRENCY, ("hook", f"c{n}"), [{"key": f"k{n}"}])
        run_all(lanes, 50)
    finally:
        lanes.close()
    assert 1 <= len(senders) <= CONCURRENCY


def test_lanes_waiting_for_a_free_slot_wake_no_other_worker(monkeypatch):
    """Every slot awaits its answer's recording: a woken worker could only wait for a slot too."""
    monkeypatch.setattr(lanes_module, "WAKE_AFTER", 0.0)
    senders = []

    def send(row, admitted):
        senders.append(threading.current_thread().name)
        return "sent"

    lanes = Lanes(admit=lambda row: None, send=send)
    try:
        for n in range(6):
            lanes.submit("file", 2, ("file", f"c{n}"), [{"key": f"k{n}"}])
        unrecorded = []
        while len(unrecorded) < 2:  # both slots used; the answers are not recorded yet
            unrecorded.extend(lanes.finished(timeout=5))
        for _ in range(3):  # the owner looks again and again while 4 lanes wait for a slot
            assert lanes.finished(timeout=0.05) == []
        for _row, _answer, recorded in unrecorded:
            recorded()
        answers = run_all(lanes, 4)
    finally:
        lanes.close()
    assert len(answers) == 4
    assert len(set(senders)) == 1, f"only the awake worker sends; used {sorted(set(senders))}"
