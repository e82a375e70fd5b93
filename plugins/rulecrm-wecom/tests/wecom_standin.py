"""A stand-in WeCom server on 127.0.0.1: the robot webhook and the customer-contact API, as documented."""
from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.parse
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rulecrm.channels import Message

ROBOT_KEY = "5b3e9d1c-robot-key-never-shown"
CONTACT_SECRET = "contact-secret-never-shown"
ROBOT_PER_MINUTE = 20
CONTENT_LIMITS = {"text": 2048, "markdown": 4096}


class StandIn:
    """The server's state; tests read `received` and steer it with `fail_next`, `expire_tokens`..."""

    def __init__(self, *, robot_keys=(), corp_id="corp-1", secret="contact-secret", customers=(), staff=()):
        self.robot_keys = set(robot_keys)
        self.corp_id, self.secret = corp_id, secret
        self.customers, self.staff = set(customers), set(staff)
        self.received: list[dict] = []  # every request: method, path, query, body
        self.robot_messages: dict[str, list[dict]] = defaultdict(list)  # accepted robot posts by key
        self.tasks: list[dict] = []  # accepted mass-send tasks
        self.marks: list[dict] = []  # accepted mark_tag calls
        self.tag_groups: list[dict] = []  # {"group_id", "group_name", "tag": [{"id", "name"}]}
        self.tokens: dict[str, bool] = {}  # token -> still valid
        self.issue_expired = False  # True: new tokens are expired at once (a misbehaving token service)
        self.echo_key = lambda key: key  # how an unknown robot key is echoed in the errmsg
        self._robot_times: dict[str, deque] = defaultdict(deque)
        self._faults: deque = deque()  # ("errcode", n) or ("status", n) or ("delay", seconds), one per request
        self._ids = itertools.count(1)
        self.lock = threading.Lock()

    # -- steering -----------------------------------------------------------------------------
    def fail_next(self, count: int, *, errcode: int | None = None, status: int | None = None,
                  delay: float | None = None) -> None:
        """The next `count` requests answer `errcode` (HTTP 200), or HTTP `status`, or stall `delay` s."""
        fault = ("errcode", errcode) if errcode is not None else ("status", status) if status else ("delay", delay)
        with self.lock:
            self._faults.extend([fault] * count)

    def expire_tokens(self) -> None:
        """Every issued access token now answers 42001 (expired)."""
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = False

    def add_tag_group(self, group_name: str, *names: str) -> dict[str, str]:
        """Pre-creates corp tags (as an admin would); returns their ids by name."""
        with self.lock:
            group = {"group_id": f"grp-{next(self._ids)}", "group_name": group_name, "tag": []}
            self.tag_groups.append(group)
            for name in names:
                group["tag"].append({"id": f"tag-{next(self._ids)}", "name": name})
            return {tag["name"]: tag["id"] for tag in group["tag"]}

    def tag_name(self, tag_id: str) -> str | None:
        return next((t["name"] for g in self.tag_groups for t in g["tag"] if t["id"] == tag_id), None)

    def requests_to(self, path: str) -> list[dict]:
        return [r for r in self.received if r["path"] == path]

    # -- protocol -----------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body) -> tuple[int, dict]:
        with self.lock:
            self.received.append({"method": method, "path": path, "query": query, "body": body})
            fault = self._faults.popleft() if self._faults else None
        if fault and fault[0] == "delay":
            time.sleep(fault[1])
        elif fault and fault[0] == "status":
            return fault[1], {"errcode": -1, "errmsg": "gateway error"}
        elif fault:
            return 200, {"errcode": fault[1], "errmsg": "system busy" if fault[1] == -1 else "injected"}
        with self.lock:
            if path == "/cgi-bin/webhook/send":
                return 200, self._robot(query.get("key", ""), body)
            if path == "/cgi-bin/gettoken":
                return 200, self._gettoken(query)
            if path.startswith("/cgi-bin/externalcontact/"):
                return 200, self._contact(path.rsplit("/", 1)[1], query.get("access_token", ""), body)
        return 404, {"errcode": 404, "errmsg": "not found"}

    def _robot(self, key: str, body) -> dict:
        if key not in self.robot_keys:
            # echoes the key so tests can check that channels mask it
            return {"errcode": 93000, "errmsg": f"invalid webhook url, key={self.echo_key(key)}, hint: [standin]"}
        window = self._robot_times[key]
        now = time.monotonic()
        while window and now - window[0] >= 60:
            window.popleft()
        if len(window) >= ROBOT_PER_MINUTE:
            return {"errcode": 45009, "errmsg": "api freq out of limit"}
        window.append(now)
        msgtype = body.get("msgtype") if isinstance(body, dict) else None
        if msgtype not in CONTENT_LIMITS:
            return {"errcode": 40008, "errmsg": "invalid message type"}
        content = (body.get(msgtype) or {}).get("content")
        if not isinstance(content, str) or not content:
            return {"errcode": 41009, "errmsg": "missing content"}
        if len(content.encode("utf-8")) > CONTENT_LIMITS[msgtype]:
            return {"errcode": 40058, "errmsg": f"content exceed max length {CONTENT_LIMITS[msgtype]}"}
        self.robot_messages[key].append(body)
        return {"errcode": 0, "errmsg": "ok"}

    def _gettoken(self, query: dict) -> dict:
        if query.get("corpid") != self.corp_id:
            return {"errcode": 40013, "errmsg": "invalid corpid"}
        if query.get("corpsecret") != self.secret:
            return {"errcode": 40001, "errmsg": "invalid credential"}
        token = f"token-{next(self._ids)}"
        self.tokens[token] = not self.issue_expired
        return {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}

    def _contact(self, api: str, token: str, body) -> dict:
        if token not in self.tokens:
            return {"errcode": 40014, "errmsg": "invalid access_token"}
        if not self.tokens[token]:
            return {"errcode": 42001, "errmsg": "access_token expired"}
        handler = getattr(self, f"_api_{api}", None)
        if handler is None or not isinstance(body, dict):
            return {"errcode": 40058, "errmsg": "invalid request"}
        return handler(body)

    def _api_get_corp_tag_list(self, body: dict) -> dict:
        return {"errcode": 0, "errmsg": "ok", "tag_group": json.loads(json.dumps(self.tag_groups))}

    def _api_add_corp_tag(self, body: dict) -> dict:
        names = [t.get("name") for t in body.get("tag") or ()]
        if not names or not all(isinstance(n, str) and n for n in names):
            return {"errcode": 40071, "errmsg": "invalid tag name"}
        group = next((g for g in self.tag_groups if g["group_name"] == body.get("group_name")), None)
        if group is None:
            group = {"group_id": f"grp-{next(self._ids)}", "group_name": body.get("group_name"), "tag": []}
            self.tag_groups.append(group)
        created = []
        for name in dict.fromkeys(names):
            tag = next((t for t in group["tag"] if t["name"] == name), None)
            if tag is None:
                tag = {"id": f"tag-{next(self._ids)}", "name": name}
                group["tag"].append(tag)
            created.append(tag)
        return {"errcode": 0, "errmsg": "ok",
                "tag_group": {"group_id": group["group_id"], "group_name": group["group_name"], "tag": created}}

    def _api_mark_tag(self, body: dict) -> dict:
        if body.get("userid") not in self.staff:
            return {"errcode": 60111, "errmsg": "invalid userid"}
        if body.get("external_userid") not in self.customers:
            return {"errcode": 84061, "errmsg": "not external contact"}
        add, remove = body.get("add_tag") or [], body.get("remove_tag") or []
        if not add and not remove:
            return {"errcode": 40058, "errmsg": "add_tag and remove_tag are both empty"}
        if any(self.tag_name(tag_id) is None for tag_id in add + remove):
            return {"errcode": 40068, "errmsg": "invalid tagid"}
        self.marks.append(body)
        return {"errcode": 0, "errmsg": "ok"}

    def _api_add_msg_template(self, body: dict) -> dict:
        if body.get("chat_type", "single") != "single" or body.get("sender") not in self.staff:
            return {"errcode": 40058, "errmsg": "invalid chat_type or sender"}
        if not (body.get("text") or {}).get("content"):
            return {"errcode": 41009, "errmsg": "missing content"}
        self.tasks.append(body)
        fail = [u for u in body.get("external_userid") or () if u not in self.customers]
        return {"errcode": 0, "errmsg": "ok", "fail_list": fail, "msgid": f"msg-{next(self._ids)}"}


def message(text: str, *, key: str = "k-1", address: str = "wm-alice") -> Message:
    """A Message as the dispatcher builds it."""
    return Message(key=key, channel="wecom", address=address, text=text, kind="service",
                   customer_id="c-1", rule="some-rule")


def serve(state: StandIn) -> tuple[ThreadingHTTPServer, str]:
    """Starts the server for `state` on a free port; returns it and its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="wecom-standin",
                     daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


def _handler(state: StandIn):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self._answer("GET", None)

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw.decode("utf-8"))
            except ValueError:
                body = None
            self._answer("POST", body)

        def _answer(self, method, body):
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            status, answer = state.handle(method, parts.path, query, body)
            payload = json.dumps(answer, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (timeout tests)

        def log_message(self, format, *args):
            pass

    return Handler
