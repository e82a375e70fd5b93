"""The demo-sms channel against a local gateway, and the plugin as rulecrm sees it."""
from __future__ import annotations

import pytest

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, ChannelConfig, ChannelConfigError, Message
from rulecrm.plugins import address_fields, build_plugin_manager, channel_types, functions

from rulecrm_demo_sms import plugin
from rulecrm_demo_sms.channel import DemoSmsChannel

MESSAGE = Message(key="welcome|c1|e1", channel="sms", address="+8613800000000", text="欢迎!",
                  kind="marketing", customer_id="c1", rule="welcome")


def channel(url, env=None):
    settings = {"url": url, "token_env": "DEMO_SMS_TOKEN", "sender": "TeaShop"}
    env = {"DEMO_SMS_TOKEN": "s3cret"} if env is None else env
    return DemoSmsChannel(ChannelConfig("sms", "demo-sms", settings, env=env))


def test_a_message_is_posted_with_the_token(gateway):
    delivery = channel(gateway.url).send(MESSAGE)
    assert delivery.status == DELIVERED and delivery.code == "m-1"
    (request,) = gateway.requests
    assert request["authorization"] == "Bearer s3cret"
    assert request["body"] == {"to": "+8613800000000", "text": "欢迎!", "sender": "TeaShop", "id": "welcome|c1|e1"}


@pytest.mark.parametrize("status,answer,headers,expected,code,retry_after", [
    (200, {"ok": False, "error": "throttled"}, {}, RETRYABLE, "throttled", None),
    (200, {"ok": False, "error": "invalid_number"}, {}, PERMANENT, "invalid_number", None),
    (429, {}, {"Retry-After": "30"}, RETRYABLE, "429", 30.0),
    (503, {}, {}, RETRYABLE, "503", None),
    (401, {"error": "bad token"}, {}, PERMANENT, "401", None),
])
def test_errors_are_classified(gateway, status, answer, headers, expected, code, retry_after):
    gateway.answers.append((status, answer, headers))
    delivery = channel(gateway.url).send(MESSAGE)
    assert (delivery.status, delivery.code, delivery.retry_after) == (expected, code, retry_after)


def test_an_unreachable_gateway_is_worth_retrying(gateway):
    url = gateway.url
    gateway.shutdown()
    gateway.server_close()
    assert channel(url).send(MESSAGE).status == RETRYABLE


def test_the_token_comes_from_the_environment():
    with pytest.raises(ChannelConfigError, match="DEMO_SMS_TOKEN"):
        channel("http://127.0.0.1:9/send", env={})


def test_rulecrm_sees_the_channel_type_and_the_function():
    manager = build_plugin_manager(load_entry_points=False, extra=[plugin])
    assert channel_types(manager)["demo-sms"].limits.per_minute == 60
    assert address_fields(manager)["demo-sms"] == "phone"
    assert functions(manager)["sms_segments"]("a" * 161) == 2
    assert functions(manager)["sms_segments"]("你好") == 1
