"""The webhook channel against a live receiver: body, headers, signature and every answer's class."""
from __future__ import annotations

import json
import logging
import socket
import time

import pytest
from webhook_receiver import SECRET, SECRET_ENV, message

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, ChannelConfigError
from rulecrm_webhook import BODY_FIELDS, verify_signature
from rulecrm_webhook.channel import retry_after_seconds

FIXED_NOW = 1_780_000_000  # 2026-05-28T20:26:40+00:00


def test_delivers_one_signed_json_post(receiver, make_channel):
    delivery = make_channel().send(message(subject="续杯提醒"))

    assert delivery.status == DELIVERED and delivery.code == "200"
    [seen] = receiver.deliveries
    assert list(seen["json"]) == list(BODY_FIELDS)
    assert seen["json"] == {
        "key": "refill|c-1|e-9", "channel": "hooks", "address": "c-1", "customer_id": "c-1", "rule": "refill",
        "kind": "marketing", "subject": "续杯提醒", "text": "您的茶快喝完了 🍵", "sent_at": seen["json"]["sent_at"],
    }
    headers = seen["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "refill|c-1|e-9"
    assert abs(int(headers["X-Rulecrm-Timestamp"]) - time.time()) < 5
    assert verify_signature(SECRET, seen["body"], headers["X-Rulecrm-Signature"])


def test_body_is_deterministic_utf8_and_timestamps_agree(receiver, make_channel):
    receiver.tolerance = None
    channel = make_channel(clock=lambda: FIXED_NOW + 0.75)
    channel.send(message())
    [seen] = receiver.deliveries

    assert "您的茶快喝完了 🍵".encode() in seen["body"]  # raw UTF-8, not \u escapes
    assert seen["body"] == channel.body(message(), FIXED_NOW + 0.75)
    assert seen["json"]["sent_at"] == "2026-05-28T20:26:40+00:00"
    assert seen["headers"]["X-Rulecrm-Timestamp"] == str(FIXED_NOW)
    assert seen["json"]["subject"] is None


def test_receiver_with_another_secret_rejects_the_signature(receiver, make_channel):
    receiver.secret = "someone-else"
    delivery = make_channel().send(message())
    assert (delivery.status, delivery.code) == (PERMANENT, "401")
    assert receiver.deliveries == []


def test_redelivery_of_one_key_is_deduplicated_by_the_receiver(receiver, make_channel):
    channel = make_channel()
    assert channel.send(message()).ok and channel.send(message()).ok
    assert channel.send(message(key="refill|c-2|e-10", customer_id="c-2", address="c-2")).ok
    assert [d["json"]["key"] for d in receiver.deliveries] == ["refill|c-1|e-9", "refill|c-2|e-10"]
    assert receiver.duplicates == ["refill|c-1|e-9"]


@pytest.mark.parametrize(("status", "expected"), [
    (500, RETRYABLE), (502, RETRYABLE), (503, RETRYABLE), (504, RETRYABLE), (408, RETRYABLE), (429, RETRYABLE),
    (400, PERMANENT), (403, PERMANENT), (404, PERMANENT), (410, PERMANENT), (422, PERMANENT),
])
def test_http_status_classification(receiver, make_channel, status, expected):
    receiver.fail_next(1, status, body="no thanks")
    delivery = make_channel().send(message())
    assert (delivery.status, delivery.code) == (expected, str(status))
    assert f"HTTP {status}" in delivery.detail and "no thanks" in delivery.detail
    assert delivery.retry_after is None


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_header_is_passed_on(receiver, make_channel, status):
    receiver.fail_next(1, status, retry_after="7")
    delivery = make_channel().send(message())
    assert (delivery.status, delivery.retry_after) == (RETRYABLE, 7.0)


def test_retry_after_as_http_date():
    assert retry_after_seconds("Thu, 28 May 2026 20:27:10 GMT", FIXED_NOW) == 30.0
    assert retry_after_seconds("Thu, 28 May 2026 20:00:00 GMT", FIXED_NOW) == 0.0
    assert retry_after_seconds("soon", FIXED_NOW) is None
    assert retry_after_seconds(None, FIXED_NOW) is None


def test_one_attempt_per_send_until_the_receiver_recovers(receiver, make_channel):
    receiver.fail_next(2, 503)
    channel = make_channel()
    results = [channel.send(message()).status for _ in range(3)]
    assert results == [RETRYABLE, RETRYABLE, DELIVERED]
    assert receiver.requests == 3 and len(receiver.deliveries) == 1


def test_redirect_is_not_followed(receiver, make_channel):
    receiver.fail_next(1, 302)
    delivery = make_channel().send(message())
    assert (delivery.status, delivery.code) == (PERMANENT, "302")
    assert receiver.requests == 1


def test_timeout_is_retryable(receiver, make_channel):
    receiver.stall_next()
    started = time.monotonic()
    delivery = make_channel(timeout=0.3).send(message())
    assert delivery.status == RETRYABLE and delivery.code is None
    assert "0.3s" in delivery.detail
    assert time.monotonic() - started < 3


def test_connection_refused_is_retryable(make_channel):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delivery = make_channel(url=f"http://127.0.0.1:{port}/hook").send(message())
    assert delivery.status == RETRYABLE and "cannot connect" in delivery.detail


def test_unsigned_without_a_secret(receiver, make_channel, caplog):
    receiver.secret = None
    with caplog.at_level(logging.WARNING, logger="rulecrm_webhook"):
        channel = make_channel(secret_env=None, env={})
    assert "not signed" in caplog.text
    assert channel.send(message()).ok
    assert "X-Rulecrm-Signature" not in receiver.deliveries[0]["headers"]


def test_the_secret_never_shows(receiver, make_channel, caplog):
    caplog.set_level(logging.DEBUG)
    channel = make_channel(timeout=0.3)
    receiver.fail_next(1, 400, body=f"bad request signed with {SECRET}")
    receiver.fail_next(1, 500, body=f"boom {SECRET}")
    receiver.stall_next()
    deliveries = [channel.send(message()) for _ in range(4)]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deliveries.append(make_channel(url=f"http://127.0.0.1:{port}/").send(message()))

    assert [d.status for d in deliveries] == [PERMANENT, RETRYABLE, RETRYABLE, DELIVERED, RETRYABLE]
    texts = [caplog.text, repr(channel), json.dumps(receiver.deliveries[0]["json"])]
    texts += [f"{d.code} {d.detail}" for d in deliveries]
    assert all(SECRET not in text for text in texts)
    assert "[secret]" in deliveries[0].detail


@pytest.mark.parametrize(("settings", "env", "complaint"), [
    ({"url": None}, None, "set `url`"),
    ({"url": "ftp://example.com/x"}, None, "http:// or https://"),
    ({"url": "http:///nohost"}, None, "http:// or https://"),
    ({"url": "http://127.0.0.1:port/"}, None, "http:// or https://"),
    ({}, {}, f"environment variable {SECRET_ENV} is not set"),
    ({"timeout": 0}, None, "`timeout` must be a positive float"),
    ({"timeout": "soon"}, None, "`timeout` must be a positive float"),
    ({"per_minute": 2.5}, None, "`per_minute` must be a positive int"),
])
def test_bad_settings_are_reported(make_channel, settings, env, complaint):
    with pytest.raises(ChannelConfigError, match="hooks") as raised:
        make_channel(env=env, **settings)
    assert complaint in str(raised.value)


def test_url_from_the_environment_and_per_minute(receiver, make_channel):
    channel = make_channel(url=None, url_env="HOOK_URL", per_minute=20,
                           env={"HOOK_URL": receiver.url, SECRET_ENV: SECRET})
    assert channel.limits.per_minute == 20 and channel.timeout == 10
    assert channel.send(message()).ok


def test_non_ascii_key_is_percent_encoded_in_the_header_only(receiver, make_channel):
    key = "refill|林-01|e-9"
    assert make_channel().send(message(key=key, customer_id="林-01")).ok
    [seen] = receiver.deliveries
    assert seen["json"]["key"] == key
    assert seen["headers"]["Idempotency-Key"] == "refill|%E6%9E%97-01|e-9"
