"""The built-in event sources: the jsonl follower (offset kept in the store) and the loopback http receiver."""
from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from datetime import timezone

import pytest

from rulecrm import plugins
from rulecrm.errors import StateError
from rulecrm.events import Event
from rulecrm.sources import HttpSource, JsonlFollowSource, SourceContext, SourceError
from rulecrm.sources import http as http_source
from rulecrm.sources.reader import Rejected
from rulecrm.state.store import Store

CONTEXT = SourceContext(timezone.utc)


def line(event_id, customer="c-1", at="2026-03-01T10:00:00Z"):
    obj = {"type": "order.placed", "customer_id": customer, "at": at, "data": {"sku": "tea", "amount": 1}}
    if event_id:
        obj["id"] = event_id
    return json.dumps(obj) + "\n"


def test_builtin_sources_are_a_plugin_of_the_same_hook():
    manager = plugins.build_plugin_manager(load_entry_points=False)
    assert {"jsonl", "http"} <= set(plugins.event_sources(manager))
    row = next(r for r in plugins.describe(manager) if r["name"] == "rulecrm.sources.builtin")
    assert row["hooks"] == ["rulecrm_event_sources"]


def test_jsonl_reads_complete_lines_only_and_resumes_from_the_stored_offset(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(line("e-1") + line("e-2") + line("e-3")[:20])  # the third line is still being written
    store = Store.open(":memory:")
    source = JsonlFollowSource(str(path), CONTEXT)
    source.open(store)
    items = source.poll(100)
    assert [(n, e.id) for n, e in items] == [(1, "e-1"), (2, "e-2")]
    with store.transaction():
        source.commit(store)
    assert source.poll(100) == []
    with path.open("a") as handle:
        handle.write(line("e-3")[20:] + "not json\n" + "\n" + line(None))
    restarted = JsonlFollowSource(str(path), CONTEXT)  # a new process on the same state
    restarted.open(store)
    items = restarted.poll(100)
    assert [n for n, _ in items] == [3, 4, 6]
    assert items[0][1].id == "e-3"
    assert isinstance(items[1][1], Rejected) and "not valid JSON" in items[1][1].error
    assert isinstance(items[2][1], Event) and items[2][1].id.startswith("auto-")


def test_jsonl_without_commit_reads_the_same_lines_again_after_a_restart(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(line("e-1") + line("e-2"))
    store = Store.open(":memory:")
    first = JsonlFollowSource(str(path), CONTEXT)
    first.open(store)
    assert len(first.poll(1)) == 1  # the limit is honoured
    again = JsonlFollowSource(str(path), CONTEXT)  # crashed before committing: nothing was consumed
    again.open(store)
    assert [e.id for _, e in again.poll(10)] == ["e-1", "e-2"]


def test_a_file_that_shrank_is_read_from_the_start(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(line("e-1") + line("e-2"))
    messages = []
    source = JsonlFollowSource(str(path), SourceContext(timezone.utc, on_message=messages.append))
    source.open(Store.open(":memory:"))
    source.poll(10)
    path.write_text(line("e-9"))
    assert [e.id for _, e in source.poll(10)] == ["e-9"]
    assert "shrank" in messages[0]


def test_a_missing_file_is_waited_for(tmp_path):
    source = JsonlFollowSource(str(tmp_path / "later.jsonl"), CONTEXT)
    source.open(Store.open(":memory:"))
    assert source.poll(10) == []


def test_http_refuses_a_non_loopback_host_unless_allowed():
    with pytest.raises(SourceError, match="not a loopback address"):
        HttpSource("0.0.0.0:0", CONTEXT)
    with pytest.raises(SourceError, match="HOST:PORT"):
        HttpSource("127.0.0.1:web", CONTEXT)


def _post(url, body):
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _serve_one(source, store, body, path="/events"):
    """POST `body` from a client thread while this thread plays the runner: poll, commit, answer."""
    answer = {}
    url = f"http://{source.name[len('http:'):]}{path}"
    client = threading.Thread(target=lambda: answer.update(result=_post(url, body)))
    client.start()
    taken = []
    while client.is_alive():
        items = source.poll(100)
        taken.extend(items)
        with store.transaction():
            for _n, item in items:  # what the runner does: record the events (the dead letters are not needed here)
                if isinstance(item, Event):
                    store.record_event(item.id, item.customer_id, item.at.timestamp(), item.type, item.to_json())
            source.commit(store)
        source.committed()
        client.join(0.01)
    return answer["result"], taken


def test_http_accepts_jsonl_and_single_objects_with_a_real_client():
    store = Store.open(":memory:")
    source = HttpSource("127.0.0.1:0", CONTEXT)
    source.open(store)
    try:
        (status, body), taken = _serve_one(source, store, line("e-1") + line("e-2"))
        assert status == 202 and body == {"accepted": 2, "rejected": 0}
        assert [e.id for _, e in taken] == ["e-1", "e-2"]
        pretty = json.dumps(json.loads(line("e-3")), indent=2)
        (status, body), taken = _serve_one(source, store, pretty)
        assert status == 202 and [e.id for _, e in taken] == ["e-3"]
        (status, body), taken = _serve_one(source, store, line("e-4") + "{oops\n")
        assert status == 400 and body["accepted"] == 1 and body["rejected"] == 1
        assert body["errors"][0]["line"] == 2 and "not valid JSON" in body["errors"][0]["error"]
        assert isinstance(taken[1][1], Rejected)  # the runner puts it in the dead-letter store
        (status, body), _ = _serve_one(source, store, line("e-5"), path="/other")
        assert status == 404
    finally:
        source.close()


def test_a_request_not_taken_in_time_is_answered_503_and_withdrawn(monkeypatch):
    """503 means "not applied": a request the runner had not taken when the client's wait ran out is dropped."""
    monkeypatch.setattr(http_source, "ANSWER_TIMEOUT", 0.2)
    store = Store.open(":memory:")
    source = HttpSource("127.0.0.1:0", CONTEXT)
    source.open(store)
    try:
        status, body = _post(f"http://{source.name[len('http:'):]}/events", line("e-1"))
        assert status == 503 and "send again" in body["error"]
        assert source.poll(100) == []
    finally:
        source.close()


def test_http_closes_at_once_when_it_was_never_opened():
    """A runner whose start-up failed after building the source closes it: that must not hang."""
    source = HttpSource("127.0.0.1:0", CONTEXT)
    closer = threading.Thread(target=source.close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive()


def test_http_answers_503_once_closing():
    source = HttpSource("127.0.0.1:0", CONTEXT)
    source.open(Store.open(":memory:"))
    url = f"http://{source.name[len('http:'):]}/events"
    answer = {}
    client = threading.Thread(target=lambda: answer.update(result=_post(url, line("e-1"))))
    client.start()
    while source._queue.empty():
        client.join(0.01)
    source.close()
    client.join(10)
    assert answer["result"][0] == 503


def test_a_damaged_stored_position_is_a_state_error_not_a_traceback(tmp_path):
    store = Store.open(":memory:")
    path = tmp_path / "events.jsonl"
    with store.transaction():
        store.set_meta(f"source:jsonl:{path}", {"offset": "abc"})
    with pytest.raises(StateError, match="position for jsonl:.* is damaged"):
        JsonlFollowSource(str(path), CONTEXT).open(store)


def test_http_listens_with_a_backlog_for_many_clients_at_once():
    """A backlog of 5 (socketserver's default) made clients beyond it wait a second for a SYN retry (B6).
    Before the source serves, 200 clients connect at once: the kernel completes every handshake."""
    source = HttpSource("127.0.0.1:0", CONTEXT)
    clients = []
    try:
        for _ in range(200):
            clients.append(socket.create_connection(source.server_address, timeout=0.5))
    finally:
        for client in clients:
            client.close()
        source.close()
    assert len(clients) == 200
