"""`sign` and `verify_signature`: the scheme a receiver implements, checked by hand and against the README."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

from rulecrm.channels import ChannelConfig, Message
from rulecrm_webhook import BODY_FIELDS, WebhookChannel, sign, verify_signature

BODY = '{"key":"k","text":"您好"}'.encode()
NOW = 1_780_000_000


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(b"s3cret", b"1780000000." + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", NOW, BODY) == "sha256=" + expected


def test_verify_accepts_the_genuine_signature():
    header = sign("s3cret", NOW, BODY)
    assert verify_signature("s3cret", str(NOW), BODY, header, now=NOW + 299)
    assert verify_signature(b"s3cret", NOW, BODY, header, tolerance=None, now=NOW + 10**6)


def test_verify_rejects_wrong_secret_tampering_and_staleness():
    header = sign("s3cret", NOW, BODY)
    assert not verify_signature("wrong", NOW, BODY, header, now=NOW)
    assert not verify_signature("s3cret", NOW, BODY + b" ", header, now=NOW)
    assert not verify_signature("s3cret", NOW + 1, BODY, header, now=NOW)
    assert not verify_signature("s3cret", NOW, BODY, header, now=NOW + 301)
    assert not verify_signature("s3cret", NOW, BODY, header, now=NOW - 301)


def test_verify_rejects_malformed_input():
    header = sign("s3cret", NOW, BODY)
    assert not verify_signature("s3cret", NOW, BODY, None, now=NOW)
    assert not verify_signature("s3cret", NOW, BODY, header.removeprefix("sha256="), now=NOW)
    assert not verify_signature("s3cret", "yesterday", BODY, header, now=NOW)
    assert not verify_signature("s3cret", None, BODY, header, now=NOW)


def readme_block(language: str) -> str:
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    return text.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_readme_receiver_snippet_agrees_with_sign():
    namespace = {}
    exec(readme_block("python").split("# in a request handler")[0], namespace)
    verify = namespace["verify"]
    now = str(int(time.time()))
    assert verify(b"s3cret", now, BODY, sign("s3cret", now, BODY))
    assert not verify(b"wrong", now, BODY, sign("s3cret", now, BODY))
    assert not verify(b"s3cret", str(NOW), BODY, sign("s3cret", NOW, BODY))


def test_readme_body_example_matches_the_channel():
    example = json.loads(readme_block("json"))
    config = ChannelConfig("sms", "webhook", {"url": "http://127.0.0.1:8080/sms"})
    body = WebhookChannel(config).body(Message(**{k: v for k, v in example.items() if k != "sent_at"}), NOW)
    assert json.loads(body) == example and list(example) == list(BODY_FIELDS)
