"""The dispatcher masks every channel's secrets in each delivery's error, whatever the channel itself does.

A deliberately careless channel type (`leaky`) POSTs to a real HTTP server on 127.0.0.1 and returns
the server's answer as its error, unmasked. The server echoes the channel's secrets in the forms a
provider may: raw, URL-encoded, with whitespace changed, cut short, and a `url_env` token in a 404.
Nothing of them may reach `--out`, the outbox in the state file, a hook, or a warning.
"""
from __future__ import annotations

import io
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError
from urllib.parse import quote, quote_plus, urlsplit
from urllib.request import Request, urlopen

import pytest
from helpers import ev, write_events, write_rules

from rulecrm.app.replay import replay
from rulecrm.channels import DELIVERED, PERMANENT, ChannelType, Delivery, Setting
from rulecrm.channels.dispatch import MAX_ERROR
from rulecrm.hookspecs import hookimpl
from rulecrm.plugins import build_plugin_manager

pytestmark = pytest.mark.slow  # replays delivering to a real HTTP server

TOKEN = "Tk4Rq9 zLm/8+Wx=&Yv2Pn"  # the channel's API token: a space and URL-special characters
URL_TOKEN = "uRl7Hj3Kd9Qs2Zx5Cv8B"  # the token inside the URL given through url_env
FORMS = {  # path -> what the server answers (HTTP 400) for a request to it
    "raw": f"bad token {TOKEN}",
    "quoted": f"bad token {quote(TOKEN, safe='')}",
    "plus": f"bad token {quote_plus(TOKEN)}",
    "lower": "bad token " + "".join(c.lower() if c in "ABCDEF" and i % 3 else c
                                    for i, c in enumerate(quote(TOKEN, safe=""))),
    "spaces": "bad token " + TOKEN.replace(" ", "\n\t"),
    "cut": "x" * 150 + " bad token " + TOKEN[:11],
    "json": json.dumps({"error": f"bad token {TOKEN}"}),
}


class Echo(ThreadingHTTPServer):
    """Answers 400 with the echo the path names; a path under /u/ is the url_env one: 404 echoing it."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.daemon_threads = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if path.startswith("/u/"):
            status, body = 404, f"<html>no hook at {self.path}</html>"
        else:
            status, body = 400, FORMS[path.strip("/")]
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class LeakyChannel:
    """Sends with its token and returns whatever the server said, secrets and all."""

    def __init__(self, config):
        self.url = config.get("url") or config.secret("url")
        self.token = config.secret("token")
        self.raises = config.get("raises", False)

    def send(self, message):
        request = Request(self.url, data=message.text.encode(), method="POST",
                          headers={"Authorization": f"Bearer {quote(self.token)}"})
        try:
            with urlopen(request, timeout=5) as answer:
                return Delivery(DELIVERED, code=str(answer.status))
        except HTTPError as error:
            body = error.read().decode()
            if self.raises:
                raise RuntimeError(f"{self.url} answered {body}") from None
            return Delivery(PERMANENT, code=str(error.code), detail=f"{self.url} answered {body}")

    def close(self):
        pass


class LeakyPlugin:
    def __init__(self):
        self.seen = []

    @hookimpl
    def rulecrm_channel_types(self):
        settings = (Setting("url"), Setting("token", secret=True), Setting("raises"))
        return [ChannelType("leaky", LeakyChannel, settings=settings)]

    @hookimpl
    def rulecrm_action_dispatched(self, action, delivery):
        self.seen.append(f"{delivery.code} {delivery.detail} {action.get('error')}")


@pytest.fixture
def echo():
    server = Echo()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def forms_of(secret: str) -> list[str]:
    """What must not be found: the secret as sent and encoded, and its first and last characters."""
    return [secret, quote(secret, safe=""), quote_plus(secret), secret[:6], secret[-6:]]


def test_the_dispatcher_masks_what_a_careless_channel_leaks(tmp_path, echo, capsys):
    channels = {name: f"{{type: leaky, url: \"{echo.base}/{name}\", token_env: LEAKY_TOKEN}}" for name in FORMS}
    channels["hidden"] = "{type: leaky, url_env: LEAKY_URL, token_env: LEAKY_TOKEN}"
    channels["raising"] = f"{{type: leaky, url: \"{echo.base}/raw\", token_env: LEAKY_TOKEN, raises: true}}"
    text = "shop: {timezone: UTC}\nchannels:\n" + "".join(f"  {n}: {c}\n" for n, c in channels.items())
    text += "contacts:\n" + "".join(f"  {n}-desk: {{channel: {n}, address: desk}}\n" for n in channels)
    text += "rules:\n" + "".join(
        f"  - {{id: to-{n}, on: chat.received, notify: {{to: {n}-desk, template: \"hi\"}}}}\n" for n in channels)
    rules = write_rules(tmp_path, text)
    events = write_events(tmp_path, [ev("chat.received", "c1", "2026-03-01T10:00:00Z", id="e1", text="hi")])
    hidden_url = f"{echo.base}/u/hooks/{URL_TOKEN}?token={URL_TOKEN[::-1]}&format=json"
    env = {"LEAKY_TOKEN": TOKEN, "LEAKY_URL": hidden_url}
    plugin, warnings, out = LeakyPlugin(), [], io.StringIO()
    manager = build_plugin_manager(load_entry_points=False, extra=[plugin])
    state = tmp_path / "state.db"
    replay(rules, events, state=str(state), out=out, plugin_manager=manager, dispatch=True,
           dispatch_options={"env": env, "on_warning": warnings.append, "max_attempts": 1, "sleep": lambda s: None})

    actions = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(a["channel"] for a in actions) == sorted(channels)
    assert all(a["status"] == "dead" and "[secret]" in a["error"] for a in actions), actions
    by_channel = {a["channel"]: a for a in actions}
    assert "answered bad token [secret]" in by_channel["raw"]["error"]
    assert by_channel["hidden"]["error"].startswith(
        "[secret] answered <html>no hook at /u/hooks/[secret]?token=[secret]")
    assert by_channel["raising"]["error"].startswith("gave up after 1 attempts: RuntimeError:")
    with sqlite3.connect(state) as db:
        rows = [row[0] for row in db.execute("SELECT json FROM actions")]
    assert len(rows) == len(channels)
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("state.db*"))
    captured = capsys.readouterr()
    texts = [out.getvalue(), "\n".join(rows), "\n".join(plugin.seen), "\n".join(warnings), captured.out + captured.err]
    leaks = [hidden_url, quote(hidden_url, safe="")]
    leaks += [form for secret in (TOKEN, URL_TOKEN, URL_TOKEN[::-1]) for form in forms_of(secret)]
    for form in leaks:
        assert all(form not in text for text in texts), form
        assert form.encode() not in stored, form


class Boasting:
    """A channel whose error is long and ends with its token cut short (masked first, then cut)."""

    def __init__(self, config):
        self.token = config.secret("token")

    def send(self, message):
        return Delivery(PERMANENT, detail="y" * (MAX_ERROR - 4) + self.token)

    def close(self):
        pass


class BoastingPlugin:
    @hookimpl
    def rulecrm_channel_types(self):
        return [ChannelType("boasting", Boasting, settings=(Setting("token", secret=True),))]


def test_the_error_is_masked_before_it_is_cut(tmp_path):
    rules = write_rules(tmp_path, """
        channels: {b: {type: boasting, token_env: T}}
        rules:
          - {id: r, on: chat.received, notify: {to: customer, channel: b, template: "hi"}}
    """)
    events = write_events(tmp_path, [ev("chat.received", "c1", "2026-03-01T10:00:00Z", id="e1", text="hi")])
    out = io.StringIO()
    manager = build_plugin_manager(load_entry_points=False, extra=[BoastingPlugin()])
    replay(rules, events, out=out, plugin_manager=manager, dispatch=True,
           dispatch_options={"env": {"T": TOKEN}, "max_attempts": 1})
    [action] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(action["error"]) == MAX_ERROR and action["error"].endswith("[se…")
    assert TOKEN[:4] not in action["error"]
