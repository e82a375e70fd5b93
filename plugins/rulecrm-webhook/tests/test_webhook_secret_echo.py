"""End to end: a receiver that echoes the webhook's secrets in every form never gets them stored or shown.

`rulecrm replay --dispatch` runs as a subprocess against a real receiver on 127.0.0.1 that answers
each POST with an error text holding the signing secret raw, URL-encoded (`quote`, `quote_plus`,
lower-case escapes), JSON-escaped, with its whitespace changed, long enough for the channel's
200-character cut to fall inside it, or already cut short by the receiver; and a `url_env` URL whose
path and query carry tokens, echoed in a 404 page. None of it may appear in the `--out` actions, in
the outbox rows or anywhere in the bytes of the SQLite state, or on stderr.
"""
from __future__ import annotations

import json
import re
import sqlite3
from urllib.parse import quote, quote_plus

import pytest
from webhook_receiver import Receiver, message, serve

from rulecrm.channels import PERMANENT, ChannelConfig
from rulecrm.testing import replay_cli, write_events, write_rules
from rulecrm_webhook.plugin import WEBHOOK

SECRET = "Hq7Zr2 sig/n+ing=&ü-9Lm4Tx"  # signing secret: a space, URL-special and non-ASCII characters
PATH_TOKEN, QUERY_TOKEN = "Sl4ckPathT0kenPart9", "qT0ken-77Xy"


def lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


ECHOES = {  # channel name -> (status, the receiver's answer)
    "raw": (400, f"bad signature, secret was {SECRET}"),
    "quoted": (400, f"bad signature, secret was {quote(SECRET, safe='')}"),
    "quoted-path": (400, f"bad signature, secret was {quote(SECRET)}"),
    "plus": (400, f"bad signature, secret was {quote_plus(SECRET)}"),
    "lower": (400, f"bad signature, secret was {lower_escapes(quote_plus(SECRET))}"),
    "json": (400, json.dumps({"error": f"bad signature, secret was {SECRET}"})),
    "spaces": (400, "bad signature, secret was " + SECRET.replace(" ", "\r\n\t ")),
    "no-spaces": (400, "bad signature, secret was " + SECRET.replace(" ", "")),
    "long": (400, "x" * 185 + " " + SECRET + " and more"),  # the channel's 200-character cut falls inside
    "cut": (400, "bad signature, secret was " + SECRET[:10] + "..."),  # the receiver cut it itself
    "token-url": (404, "<html><body>no hook at {path}</body></html>"),
    "token-url-quoted": (404, "no hook: {path} (" + "{quoted}" + ")"),
}
URL_CHANNELS = ("token-url", "token-url-quoted")


@pytest.fixture
def echoing():
    receiver = Receiver(SECRET)
    server = serve(receiver)
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()


def leaks(secret_url: str) -> list[str]:
    """Every form the secrets must not be found in: whole, encoded and their first characters."""
    forms = []
    for secret in (SECRET, PATH_TOKEN, QUERY_TOKEN):
        forms += [secret, quote(secret, safe=""), quote_plus(secret), secret[:6], secret[-6:]]
    return forms + [secret_url, quote(secret_url, safe="")]


def test_no_echoed_secret_reaches_out_the_outbox_or_stderr(tmp_path, echoing):
    secret_url = f"{echoing.url}/T0AB12CD/{PATH_TOKEN}?token={QUERY_TOKEN}&format=json"
    channels = "".join(
        f"  {name}: {{type: webhook, url_env: HOOK_URL, secret_env: HOOK_SECRET}}\n" if name in URL_CHANNELS else
        f"  {name}: {{type: webhook, url: \"{echoing.url}\", secret_env: HOOK_SECRET}}\n" for name in ECHOES)
    contacts = "".join(f"  {name}-desk: {{channel: {name}, address: desk}}\n" for name in ECHOES)
    rules = "".join(f"  - {{id: to-{name}, on: review.created, notify: {{to: {name}-desk, template: \"差评\"}}}}\n"
                    for name in ECHOES)
    rules_dir = write_rules(tmp_path, "shop: {timezone: Asia/Shanghai}\nchannels:\n" + channels
                            + "contacts:\n" + contacts + "rules:\n" + rules)
    events = write_events(tmp_path, [{"id": "rv-1", "type": "review.created", "customer_id": "c-1",
                                      "at": "2026-03-01T10:00:00+08:00",
                                      "data": {"review_id": "r1", "order_id": "o1", "rating": 1, "text": "差"}}])
    # Each channel is answered with the echo it is named after, whatever order the concurrent sends come in.
    echoing.echo_by_channel({name: (status, text.replace("{quoted}", quote(secret_url, safe="")))
                             for name, (status, text) in ECHOES.items()})

    done, actions = replay_cli(rules_dir, events, workdir=tmp_path, dispatch=True, timeout=60,
                               env={"HOOK_SECRET": SECRET, "HOOK_URL": secret_url})

    assert done.returncode == 4, done.stderr
    assert echoing.requests == len(ECHOES)
    by_channel = {a["channel"]: a for a in actions}
    assert sorted(by_channel) == sorted(ECHOES)
    for name, (status, _text) in ECHOES.items():
        action = by_channel[name]
        assert (action["status"], action["code"]) == ("dead", str(status)), action
        assert f"HTTP {status}" in action["error"] and "[secret]" in action["error"], action["error"]
    assert "secret was [secret]" in by_channel["raw"]["error"]
    assert "no hook at /hook/[secret]/[secret]?token=[secret]&format=json" in by_channel["token-url"]["error"]
    with sqlite3.connect(tmp_path / "state.db") as db:
        outbox = "\n".join(row[0] for row in db.execute("SELECT json FROM actions"))
    assert outbox.count('"dead"') == len(ECHOES)
    state_bytes = b"".join(path.read_bytes() for path in tmp_path.glob("state.db*"))
    out_text = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    for form in leaks(secret_url):
        for where, text in (("--out", out_text), ("outbox", outbox), ("stderr", done.stderr),
                            ("stdout", done.stdout)):
            assert form not in text, (form, where)
        assert form.encode() not in state_bytes, form


@pytest.mark.parametrize("name", list(ECHOES))
def test_the_channel_itself_masks_every_echo(echoing, name):
    """The plugin's own masking, without the dispatcher's second pass."""
    secret_url = f"{echoing.url}/T0AB12CD/{PATH_TOKEN}?token={QUERY_TOKEN}&format=json"
    settings = {"url_env": "HOOK_URL"} if name in URL_CHANNELS else {"url": echoing.url}
    config = ChannelConfig(name, "webhook", {**settings, "secret_env": "HOOK_SECRET"},
                           env={"HOOK_SECRET": SECRET, "HOOK_URL": secret_url})
    status, text = ECHOES[name]
    echoing.echo_next((status, text.replace("{quoted}", quote(secret_url, safe=""))))
    delivery = WEBHOOK.factory(config).send(message())
    assert (delivery.status, delivery.code) == (PERMANENT, str(status))
    assert "[secret]" in delivery.detail and len(delivery.detail) <= 250
    assert all(form not in delivery.detail for form in leaks(secret_url)), delivery.detail
