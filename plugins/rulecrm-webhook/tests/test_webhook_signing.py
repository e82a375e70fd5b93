"""`sign` and `verify_signature`: the scheme a receiver implements, checked by hand and against the README."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from rulecrm.channels import ChannelConfig, Message
from rulecrm_webhook import BODY_FIELDS, WebhookChannel, sign, verify_signature

NOW = 1_780_000_000
BODY = ('{"key":"k","text":"您好","sent_at":"%s"}'
        % datetime.fromtimestamp(NOW, timezone.utc).isoformat(timespec="seconds")).encode()


def test_signature_is_hmac_sha256_of_the_raw_body():
    expected = hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", BODY) == "sha256=" + expected


def test_verify_accepts_the_genuine_signature():
    header = sign("s3cret", BODY)
    assert verify_signature("s3cret", BODY, header, now=NOW + 299)
    assert verify_signature(b"s3cret", BODY, header, tolerance=None, now=NOW + 10**6)


def test_verify_rejects_wrong_secret_tampering_and_staleness():
    header = sign("s3cret", BODY)
    assert not verify_signature("wrong", BODY, header, now=NOW)
    assert not verify_signature("s3cret", BODY + b" ", header, now=NOW)
    assert not verify_signature("s3cret", BODY.replace(b"2026", b"2027"), header, now=NOW)
    assert not verify_signature("s3cret", BODY, header, now=NOW + 301)
    assert not verify_signature("s3cret", BODY, header, now=NOW - 301)


def test_verify_rejects_malformed_input():
    header = sign("s3cret", BODY)
    assert not verify_signature("s3cret", BODY, None, now=NOW)
    assert not verify_signature("s3cret", BODY, header.removeprefix("sha256="), now=NOW)
    no_time = b'{"key":"k"}'
    assert not verify_signature("s3cret", no_time, sign("s3cret", no_time), now=NOW)
    assert verify_signature("s3cret", no_time, sign("s3cret", no_time), tolerance=None, now=NOW)


def readme_block(language: str) -> str:
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    return text.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_readme_receiver_snippet_agrees_with_sign():
    namespace = {}
    exec(readme_block("python").split("# in a request handler")[0], namespace)
    verify = namespace["verify"]
    fresh = ('{"key":"k","sent_at":"%s"}'
             % datetime.fromtimestamp(time.time(), timezone.utc).isoformat(timespec="seconds")).encode()
    assert verify(b"s3cret", fresh, sign("s3cret", fresh))
    assert not verify(b"wrong", fresh, sign("s3cret", fresh))
    assert not verify(b"s3cret", BODY, sign("s3cret", BODY))  # signed, but stale


def test_readme_body_example_matches_the_channel():
    example = json.loads(readme_block("json"))
    config = ChannelConfig("sms", "webhook", {"url": "http://127.0.0.1:8080/sms"})
    body = WebhookChannel(config).body(Message(**{k: v for k, v in example.items() if k != "sent_at"}), NOW)
    assert json.loads(body) == example and list(example) == list(BODY_FIELDS)
