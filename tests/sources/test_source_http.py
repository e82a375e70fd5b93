"""The `http` source against hostile clients, on real sockets on 127.0.0.1, with the real runner.

Each test runs a Runner with an `http:127.0.0.1:0` source in this thread and a client in another
(raw `socket` for malformed framing), then checks the status, the answer's body, what reached the
state's events and dead letters, and that nothing printed a traceback.
"""
from __future__ import annotations

import json
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time

import pytest
from helpers import write_rules

from rulecrm import plugins
from rulecrm.app.runner import Runner
from rulecrm.sources import http as http_source

RULES = """
shop: {timezone: UTC}
channels:
  out: {type: jsonl, path: "%s"}
rules:
  - id: thanks
    on: order.placed
    notify: {to: customer, channel: out, kind: service, template: "thanks"}
"""


def event(event_id, customer="c-1"):
    return json.dumps({"id": event_id, "type": "order.placed", "customer_id": customer,
                       "at": "2026-03-01T10:00:00Z", "data": {"sku": "tea", "amount": 1}}, ensure_ascii=False).encode()


class Live:
    def __init__(self, tmp_path):
        self.state = tmp_path / "state.db"
        self.messages: list[str] = []
        rules = write_rules(tmp_path, RULES % (tmp_path / "sends.jsonl"))
        self.runner = Runner(rules, str(self.state), sources=["http:127.0.0.1:0"],
                             manager=plugins.build_plugin_manager(load_entry_points=False), backend_name="python",
                             on_message=self.messages.append, reload_interval=0, poll_interval=0.005)
        self.runner.start()
        self.source = self.runner.sources[0]
        self.port = self.source.server_address[1]

    def serve(self, client):
        """Run the runner here until `client(self)`, run in a thread, returns; give back what it returned."""
        result = {}

        def run_client():
            try:
                result["value"] = client(self)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                result["error"] = exc
            finally:
                self.runner.stop()

        thread = threading.Thread(target=run_client)
        thread.start()
        self.runner.run()
        thread.join(30)
        if "error" in result:
            raise result["error"]
        return result["value"]

    def events(self):
        with sqlite3.connect(self.state) as db:
            return sorted(row[0] for row in db.execute("SELECT id FROM events"))

    def dead_letters(self):
        with sqlite3.connect(self.state) as db:
            return db.execute("SELECT line_no, raw, error FROM dead_letters ORDER BY line_no").fetchall()


@pytest.fixture
def live(tmp_path, capfd):
    started = Live(tmp_path)
    yield started
    started.runner.close()
    assert "Traceback" not in capfd.readouterr().err


def exchange(port, data: bytes, *, half_close=False, timeout=20.0):
    """Send raw bytes, read one answer: (status, body as JSON or None, connection closed by the server)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"no answer; got {received!r}")
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        closed = headers.get("connection", "").lower() == "close"
        return status, json.loads(body[:length]) if length else None, closed


def post(port, body: bytes, headers: str | None = None, **kw):
    if headers is None:
        headers = f"Content-Length: {len(body)}\r\n"
    return exchange(port, b"POST /events HTTP/1.1\r\nHost: x\r\n" + headers.encode() + b"\r\n" + body, **kw)


def chunked(*pieces: bytes, extension=b"", trailer=b"") -> bytes:
    out = b""
    for piece in pieces:
        out += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
    return out + b"0\r\n" + trailer + b"\r\n"


def test_an_invalid_utf8_line_is_dead_lettered_and_the_valid_lines_applied(live):
    bad = b'{"id": "x-\xff\xfe", "type": "order.placed"}'
    body = event("e-1") + b"\n" + bad + b"\r\n" + event("e-2") + b"\n"
    status, answer, _ = live.serve(lambda lv: post(lv.port, body))
    assert status == 400
    assert answer == {"accepted": 2, "rejected": 1,
                      "errors": [{"line": 2, "error": "not valid UTF-8 (byte 11 of the line)"}]}
    assert live.events() == ["e-1", "e-2"]
    [(line_no, raw, error)] = live.dead_letters()
    assert line_no == 2 and "UTF-8" in error
    assert raw == '{"id": "x-\\xff\\xfe", "type": "order.placed"}'  # the bad bytes, recoverable from the escapes


def test_lines_are_split_on_newlines_only(live):
    body = json.dumps({"id": "e-1", "type": "chat.received", "customer_id": "c-1", "at": "2026-03-01T10:00:00Z",
                       "data": {"text": "a\u2028b\x85c\x1cd"}}, ensure_ascii=False).encode() + b"\n" + event("e-2")
    status, answer, _ = live.serve(lambda lv: post(lv.port, body))
    assert (status, answer) == (202, {"accepted": 2, "rejected": 0})
    assert live.events() == ["e-1", "e-2"]


def test_a_chunked_body_is_decoded_and_applied(live):
    body = event("e-1") + b"\n" + event("e-2", customer="\u5f20\u4e09") + b"\n"
    cut = body.index("\u5f20".encode()) + 1  # a chunk boundary inside a multi-byte character
    pieces = (body[:7], body[7:cut], body[cut:])
    data = chunked(*pieces, extension=b";note=1", trailer=b"X-Trailer: yes\r\n")
    status, answer, _ = live.serve(lambda lv: post(lv.port, data, "Transfer-Encoding: chunked\r\n"))
    assert (status, answer) == (202, {"accepted": 2, "rejected": 0})
    assert live.events() == ["e-1", "e-2"]


def test_the_answer_comes_after_the_commit(live):
    def client(lv):
        status, answer, _ = post(lv.port, event("e-1") + b"\n" + event("e-2") + b"\n")
        return status, answer, lv.events()  # read by another connection the moment the answer arrives

    status, answer, seen = live.serve(client)
    assert (status, answer, seen) == (202, {"accepted": 2, "rejected": 0}, ["e-1", "e-2"])


def test_keep_alive_serves_several_requests_on_one_connection(live):
    def client(lv):
        answers = []
        with socket.create_connection(("127.0.0.1", lv.port), timeout=20) as sock:
            reader = sock.makefile("rb")
            for n in (1, 2):
                body = event(f"e-{n}") + b"\n"
                sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                status = int(reader.readline().split()[1])
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                answers.append((status, json.loads(reader.read(length))))
        return answers

    assert live.serve(client) == [(202, {"accepted": 1, "rejected": 0})] * 2
    assert live.events() == ["e-1", "e-2"]


TOO_BIG = http_source.MAX_BODY + 1


@pytest.mark.parametrize("headers, body, status, reason", [
    ("Content-Length: abc\r\n", b"{}", 400, "Content-Length must be a number of bytes, found 'abc'"),
    ("Content-Length: -5\r\n", b"{}", 400, "Content-Length must be a number of bytes, found '-5'"),
    ("Content-Length: \u0662\r\n", b"{}", 400, "Content-Length must be a number of bytes"),
    ("Content-Length: 3\r\nContent-Length: 4\r\n", b"{}", 400, "several times with different values"),
    (f"Content-Length: {TOO_BIG}\r\n", b"", 413, f"body larger than {http_source.MAX_BODY} bytes"),
    ("Content-Length: " + "9" * 5000 + "\r\n", b"", 413, "body larger than"),
    ("", b"", 411, "Content-Length is required"),
    ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"", 400, "both Transfer-Encoding and Content-Length"),
    ("Transfer-Encoding: gzip, chunked\r\n", b"", 501, "Transfer-Encoding gzip, chunked is not supported"),
])
def test_bad_framing_headers_are_answered_with_the_reason(live, headers, body, status, reason):
    answer = live.serve(lambda lv: post(lv.port, body, headers))
    assert answer[0] == status and reason in answer[1]["error"] and answer[2]  # and the connection closes
    assert live.events() == [] and live.dead_letters() == []


@pytest.mark.parametrize("data, status, reason", [
    (b"Content-Length: 500\r\n\r\n" + event("e-1"), 400, f"the body ended after {len(event('e-1'))} of the 500 bytes"),
    (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + event("e-1"), 400, "bad chunk size 'zz'"),
    (b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 500 + event("e-1"), 400, "a chunk ended after"),
    (b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 4 + event("e-1"), 400, "not followed by CRLF"),
    (b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(event("e-1")) + event("e-1") + b"\r\n", 400,
     "ended before its last"),
    (b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, 400, "chunk-size line is too long"),
])
def test_a_body_cut_short_or_badly_chunked_is_answered_400(live, data, status, reason):
    """The client sends what it has, then closes its side: it still gets the reason."""
    answer = live.serve(lambda lv: exchange(lv.port, b"POST /events HTTP/1.1\r\nHost: x\r\n" + data, half_close=True))
    assert answer[0] == status and reason in answer[1]["error"]
    assert live.events() == [] and live.dead_letters() == []


def test_a_chunked_body_over_the_limit_is_413(live, monkeypatch):
    monkeypatch.setattr(http_source, "MAX_BODY", 100)
    data = chunked(event("e-1") + b"\n", event("e-2") + b"\n")
    answer = live.serve(lambda lv: post(lv.port, data, "Transfer-Encoding: chunked\r\n"))
    assert answer[0] == 413 and "body larger than 100 bytes" in answer[1]["error"]
    assert live.events() == []


def test_a_silent_client_is_answered_408(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(http_source, "READ_TIMEOUT", 0.3)
    live = Live(tmp_path)
    try:
        answer = live.serve(lambda lv: post(lv.port, b"{", "Content-Length: 10\r\n"))
    finally:
        live.runner.close()
    assert answer[0] == 408 and "did not arrive within 0.3 s" in answer[1]["error"]
    [dropped] = [m for m in live.messages if "dropped" in m]
    assert dropped.startswith(f"{live.source.name}: client 127.0.0.1:")
    assert dropped.endswith(" dropped: its body did not arrive within 0.3 s")
    assert "Traceback" not in capfd.readouterr().err


def test_deep_nesting_over_many_lines_is_answered_and_dead_lettered(live):
    body = b'{"id": "d-1", "data": ' + b"[\n" * 3000 + event("e-1") + b"\n"

    def client(lv):
        return (post(lv.port, body), post(lv.port, b"[" * 100_000),
                post(lv.port, event("e-2") + b"\n" + b"{" * 100_000),
                post(lv.port, b"{" * 100_000 + b"\n" + event("e-3")))

    (status, answer, _), (status2, answer2, _), (status3, answer3, _), (status4, answer4, _) = live.serve(client)
    assert status == 400 and answer["accepted"] == 1 and answer["rejected"] == 3000
    assert len(answer["errors"]) == 100 and answer["errors_not_shown"] == 2900
    assert answer["errors"][0]["line"] == 1 and "nested too deep" in answer["errors"][0]["error"]
    assert status2 == 400 and answer2["rejected"] == 1 and answer2["errors"][0]["line"] == 1
    assert status3 == 400 and (answer3["accepted"], answer3["rejected"]) == (1, 1)
    assert status4 == 400 and (answer4["accepted"], answer4["rejected"]) == (1, 1)
    assert "nested too deep to read" not in answer4["errors"][0]["error"]  # its own line says what is wrong
    assert live.events() == ["e-1", "e-2", "e-3"]
    assert len(live.dead_letters()) == 3000 + 1 + 1 + 1


def test_one_object_over_several_lines_is_one_event_and_with_a_bad_byte_one_rejection(live):
    pretty = json.dumps(json.loads(event("e-1")), indent=2).encode()
    broken = pretty.replace(b'"tea"', b'"t\xffa"').replace(b'"e-1"', b'"e-2"')

    def client(lv):
        return post(lv.port, pretty), post(lv.port, broken)

    (status, answer, _), (status2, answer2, _) = live.serve(client)
    assert (status, answer) == (202, {"accepted": 1, "rejected": 0})
    line = broken.split(b"\n").index(next(x for x in broken.split(b"\n") if b"\xff" in x)) + 1
    assert status2 == 400 and answer2 == {"accepted": 0, "rejected": 1, "errors": [
        {"line": line, "error": f"line {line}: not valid UTF-8 (byte 14 of the line)"}]}
    assert live.events() == ["e-1"]
    [(line_no, raw, _error)] = live.dead_letters()
    assert line_no == line and '"t\\xffa"' in raw


def test_a_client_that_disconnects_before_the_answer_is_one_line_and_its_events_are_applied(live):
    """The answer waits for the commit; a client gone by then costs one line on stderr, no traceback."""
    body = event("e-1") + b"\n"
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    deadline = time.monotonic() + 20
    while live.source._queue.empty():  # the server has the request; the runner has not stepped yet
        assert time.monotonic() < deadline
        time.sleep(0.005)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # reset: the answer cannot be written
    deadline = time.monotonic() + 20
    while not any("dropped" in m for m in live.messages):
        assert time.monotonic() < deadline
        live.runner.step()
        time.sleep(0.005)
    dropped = [m for m in live.messages if "dropped" in m]
    assert len(dropped) == 1 and "before the answer; its events were committed" in dropped[0]
    assert live.events() == ["e-1"]


def test_a_client_that_resets_while_sending_its_body_is_one_line_and_nothing_is_applied(live):
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + event("lost"))
    deadline = time.monotonic() + 20
    while not live.source.connections:  # accepted
        assert time.monotonic() < deadline
        time.sleep(0.005)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    deadline = time.monotonic() + 20
    while not any("dropped" in m for m in live.messages):
        assert time.monotonic() < deadline
        live.runner.step()
        time.sleep(0.005)
    dropped = [m for m in live.messages if "dropped" in m]
    assert len(dropped) == 1
    assert dropped[0].endswith("it closed the connection before the answer; nothing of it was applied")
    live.runner.step()
    assert live.events() == [] and live.dead_letters() == []


def test_http_server_refusals_are_json_and_quiet(live):
    def client(lv):
        return (
            exchange(lv.port, b"GARBAGE\r\n\r\n"),
            exchange(lv.port, b"POST /events HTTP/9.Z\r\n\r\n"),
            exchange(lv.port, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n"),
            exchange(lv.port, b"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
        )

    (s1, a1, _), (s0, a0, _), (s2, a2, _), (s3, a3, _) = live.serve(client)
    assert s1 == 400 and "Bad request syntax" in a1["error"]
    assert s0 == 400 and "Bad request version" in a0["error"]
    assert s2 == 501 and "GET" in a2["error"]
    assert s3 == 404 and a3 == {"error": "POST events to /events"}


def test_events_the_runner_could_not_apply_are_not_counted_accepted(live, monkeypatch):
    """An event the runner sets aside (the engine raised on it) is answered as rejected, not accepted."""
    engine_type = type(live.runner.engine)
    real = engine_type.ingest_outcome

    def ingest_outcome(engine, item):
        if item.id == "boom":
            raise RuntimeError("engine failure")
        return real(engine, item)

    monkeypatch.setattr(engine_type, "ingest_outcome", ingest_outcome)
    status, answer, _ = live.serve(lambda lv: post(lv.port, event("e-1") + b"\n" + event("boom") + b"\n"))
    assert status == 400 and (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["errors"][0]["line"] == 2 and "not applied" in answer["errors"][0]["error"]
    assert live.events() == ["e-1"]
    assert [line_no for line_no, _raw, _error in live.dead_letters()] == [2]


def test_an_id_reused_with_other_content_is_not_counted_accepted(live):
    def client(lv):
        first = post(lv.port, event("e-1") + b"\n")
        again = post(lv.port, event("e-1") + b"\n")  # a retry: the same event, accepted (applied once)
        other = post(lv.port, event("e-2") + b"\n" + event("e-1", customer="c-9") + b"\n")
        return first, again, other

    first, again, (status, answer, _) = live.serve(client)
    assert first[:2] == again[:2] == (202, {"accepted": 1, "rejected": 0})
    assert status == 400 and (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["errors"][0]["line"] == 2 and "already used by a different event" in answer["errors"][0]["error"]


@pytest.mark.slow
def test_rulecrm_run_survives_hostile_clients_without_a_traceback(tmp_path):
    """The real command: every kind of bad request, then SIGTERM; stderr has one line per dropped client."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rules = write_rules(tmp_path, RULES % (tmp_path / "sends.jsonl"))
    state = tmp_path / "state.db"
    log_path = tmp_path / "runner.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rulecrm", "run", "--rules", str(rules), "--state", str(state),
             "--source", f"http:127.0.0.1:{port}", "--backend", "python"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log_path.read_text():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        assert post(port, b"", "Content-Length: x\r\n")[0] == 400
        assert post(port, b"{}", "Transfer-Encoding: chunked\r\n", half_close=True)[0] == 400
        accepted = post(port, chunked(event("e-1")), "Transfer-Encoding: chunked\r\n")
        assert accepted[:2] == (202, {"accepted": 1, "rejected": 0})
        assert post(port, event("e-2") + b"\n\xff\n" + b"[\n" * 2000)[0] == 400
        assert post(port, b"[" * 100_000)[0] == 400
        for n in range(3):  # clients that reset the connection before the answer
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
                len(event(f"r-{n}")), event(f"r-{n}")))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        deadline = time.monotonic() + 60
        while True:
            with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
                if db.execute("SELECT count(*) FROM events").fetchone()[0] >= 5:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    text = log_path.read_text()
    assert "Traceback" not in text and "Exception" not in text
    with sqlite3.connect(state) as db:
        assert sorted(r[0] for r in db.execute("SELECT id FROM events")) == ["e-1", "e-2", "r-0", "r-1", "r-2"]
        assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 1 + 2000 + 1
    for line in text.splitlines():
        assert line.startswith(("listening on", "running:", "stopped:", f"http:127.0.0.1:{port}")), line
    dropped = [line for line in text.splitlines() if " dropped: " in line]
    assert len(dropped) == 3 and all("its events were committed" in line for line in dropped)


def test_expect_100_continue_is_answered_only_for_an_acceptable_body(live):
    body = event("e-1") + b"\n"

    def client(lv):
        with socket.create_connection(("127.0.0.1", lv.port), timeout=20) as sock:
            sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))
            interim = b""
            while not interim.endswith(b"\r\n\r\n"):
                byte = sock.recv(1)
                assert byte, interim
                interim += byte
            sock.sendall(body)
            final = b""
            while chunk := sock.recv(65536):
                final += chunk
        refused = post(lv.port, b"", f"Expect: 100-continue\r\nContent-Length: {TOO_BIG}\r\n")
        return interim, final, refused

    interim, final, refused = live.serve(client)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 202 ") and final.endswith(b'{"accepted": 1, "rejected": 0}')
    assert refused[0] == 413  # the first answer, not a 100 Continue
    assert live.events() == ["e-1"]


def serving_threads() -> int:
    """Threads of this process other than the channels' send workers."""
    return sum(1 for thread in threading.enumerate() if not thread.name.startswith("rulecrm-send-"))


def test_connections_cost_no_thread_each(live):
    """Every connection is served by the source's one asyncio thread: 100 clients kept alive at once
    add no thread to the runner's process (one each would contend with the runner for the interpreter)."""
    def client(lv):
        before = serving_threads()
        sockets = [socket.create_connection(("127.0.0.1", lv.port), timeout=20) for _ in range(100)]
        try:
            for n, sock in enumerate(sockets):
                body = event(f"e-{n}", customer=f"c-{n}") + b"\n"
                sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            answers = []
            for sock in sockets:
                received = b""
                while not received.endswith(b"}"):
                    chunk = sock.recv(65536)
                    assert chunk, received
                    received += chunk
                answers.append(received.split(b" ", 2)[1])
            return answers, lv.source.connections, serving_threads() - before
        finally:
            for sock in sockets:
                sock.close()

    answers, connections, more_threads = live.serve(client)
    assert answers == [b"202"] * 100 and connections == 100
    assert more_threads == 0
    assert len(live.events()) == 100


def test_connections_run_on_uvloop_when_it_is_installed(live):
    assert type(live.source._wire.loop).__module__.split(".")[0] == "uvloop"
    assert live.serve(lambda lv: post(lv.port, event("e-1")))[:2] == (202, {"accepted": 1, "rejected": 0})


def test_without_uvloop_the_source_runs_on_asyncios_own_loop(tmp_path, monkeypatch):
    """uvloop is not installed on Windows: the same source then serves on asyncio's loop."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    live = Live(tmp_path)
    try:
        assert type(live.source._wire.loop).__module__.split(".")[0] == "asyncio"
        answers = live.serve(lambda lv: [post(lv.port, event("e-1")), post(lv.port, b"{", "Content-Length: 9\r\n",
                                                                            half_close=True)])
    finally:
        live.runner.close()
    assert answers[0][:2] == (202, {"accepted": 1, "rejected": 0})
    assert answers[1][0] == 400 and "the body ended after 1 of the 9 bytes" in answers[1][1]["error"]
    assert live.events() == ["e-1"]


def test_an_idle_kept_alive_connection_is_closed_quietly_and_a_silent_request_is_reported(tmp_path, monkeypatch):
    """A client that keeps its connection open with nothing more to send is closed after READ_TIMEOUT
    without a message; one that stops in the middle of its request's headers is reported dropped."""
    monkeypatch.setattr(http_source, "READ_TIMEOUT", 0.3)
    live = Live(tmp_path)

    def client(lv):
        body = event("e-1") + b"\n"
        with socket.create_connection(("127.0.0.1", lv.port), timeout=20) as idle, \
                socket.create_connection(("127.0.0.1", lv.port), timeout=20) as halfway:
            idle.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            answer = idle.recv(65536)
            halfway.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\n")  # and then nothing
            closed = [idle.recv(65536), halfway.recv(65536)]  # both wait until the server closes
        return answer, closed

    try:
        answer, closed = live.serve(client)
    finally:
        live.runner.close()
    assert answer.startswith(b"HTTP/1.1 202 ") and closed == [b"", b""]
    dropped = [m for m in live.messages if "dropped" in m]
    assert len(dropped) == 1 and dropped[0].endswith("silent for 0.3 s; nothing of it was applied")
    assert live.events() == ["e-1"]
