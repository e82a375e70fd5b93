"""The `wecom-robot` channel against the stand-in webhook: delivery, errcodes, splitting, secrecy."""
from __future__ import annotations

import logging
from urllib.parse import quote, quote_plus

import pytest
from wecom_standin import ROBOT_KEY, message

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, ChannelConfigError
from rulecrm_wecom.robot import RobotChannel


def contents(wecom, key=ROBOT_KEY):
    return [body[body["msgtype"]]["content"] for body in wecom.robot_messages[key]]


def test_delivers_text_to_the_group(wecom, robot_config):
    delivery = RobotChannel(robot_config()).send(message("差评 1★: 茶叶受潮"))
    assert delivery.status == DELIVERED
    [request] = wecom.requests_to("/cgi-bin/webhook/send")
    assert request["method"] == "POST" and request["query"] == {"key": ROBOT_KEY}
    assert request["body"] == {"msgtype": "text", "text": {"content": "差评 1★: 茶叶受潮"}}


def test_the_address_is_not_used(wecom, robot_config):
    RobotChannel(robot_config()).send(message("hello", address="cs-group"))
    assert "cs-group" not in str(wecom.received)


def test_mentioned_list_from_a_comma_string(wecom, robot_config):
    RobotChannel(robot_config(mentioned_list="li, wang")).send(message("请跟进"))
    assert wecom.robot_messages[ROBOT_KEY][0]["text"] == {"content": "请跟进", "mentioned_list": ["li", "wang"]}


def test_mentioned_list_from_a_yaml_list_with_mobiles(wecom, robot_config):
    channel = RobotChannel(robot_config(mentioned_list=("@all",), mentioned_mobile_list=("13800001111",)))
    channel.send(message("请跟进"))
    text = wecom.robot_messages[ROBOT_KEY][0]["text"]
    assert text["mentioned_list"] == ["@all"] and text["mentioned_mobile_list"] == ["13800001111"]


def test_markdown_mentions_go_into_the_content(wecom, robot_config):
    RobotChannel(robot_config(msgtype="markdown", mentioned_list=["li"])).send(message("**差评**"))
    assert wecom.robot_messages[ROBOT_KEY] == [{"msgtype": "markdown", "markdown": {"content": "**差评**\n<@li>"}}]


def test_unknown_msgtype_is_a_configuration_error(robot_config):
    with pytest.raises(ChannelConfigError, match="msgtype"):
        RobotChannel(robot_config(msgtype="news"))


def test_the_whole_webhook_url_is_accepted_as_the_key(wecom, robot_config):
    url = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={ROBOT_KEY}"
    assert RobotChannel(robot_config(key=url)).send(message("hi")).ok


def test_long_chinese_text_goes_as_parts_within_2048_bytes(wecom, robot_config):
    text = "".join(f"第{i}条：您好，您上次购买的小青柑普洱快喝完了，需要为您预留一份吗？\n" for i in range(120))
    assert len(text.encode()) > 3 * 2048
    delivery = RobotChannel(robot_config(mentioned_list="li")).send(message(text))
    assert delivery.status == DELIVERED
    sent = contents(wecom)
    assert len(sent) >= 4
    assert all(len(part.encode("utf-8")) <= 2048 for part in sent)
    assert [part.split("\n", 1)[0] for part in sent] == [f"({i}/{len(sent)})" for i in range(1, len(sent) + 1)]
    assert "".join(part.split("\n", 1)[1] for part in sent) == text
    mentions = [body["text"].get("mentioned_list") for body in wecom.robot_messages[ROBOT_KEY]]
    assert mentions == [None] * (len(sent) - 1) + [["li"]]  # pinged once, with the last part


def test_markdown_splits_at_4096_bytes(wecom, robot_config):
    text = "**提醒**" + "茶" * 2000  # 6,010 bytes
    assert RobotChannel(robot_config(msgtype="markdown")).send(message(text)).ok
    sent = contents(wecom)
    assert len(sent) == 2 and all(len(part.encode()) <= 4096 for part in sent)


def test_server_rejects_over_long_text(wecom, robot_config):
    """The stand-in enforces the documented limit, so the splitting above is really needed."""
    channel = RobotChannel(robot_config())
    delivery = channel._post({"msgtype": "text", "text": {"content": "茶" * 683}})  # 2049 bytes
    assert (delivery.status, delivery.code) == (PERMANENT, "40058")


def test_busy_is_retryable(wecom, robot_config):
    wecom.fail_next(1, errcode=-1)
    delivery = RobotChannel(robot_config()).send(message("hi"))
    assert (delivery.status, delivery.code) == (RETRYABLE, "-1")


def test_over_20_a_minute_is_retryable(wecom, robot_config):
    channel = RobotChannel(robot_config())
    results = [channel.send(message(f"#{i}", key=f"k-{i}")) for i in range(21)]
    assert all(result.ok for result in results[:20])
    assert (results[20].status, results[20].code, results[20].retry_after) == (RETRYABLE, "45009", 60)
    assert len(wecom.robot_messages[ROBOT_KEY]) == 20


def test_invalid_key_is_permanent_and_masked(wecom, robot_config):
    wrong = "0000-wrong-robot-key"
    delivery = RobotChannel(robot_config(key=wrong)).send(message("hi"))
    assert (delivery.status, delivery.code) == (PERMANENT, "93000")
    assert "invalid webhook url" in delivery.detail
    assert wrong not in delivery.detail and "[secret]" in delivery.detail


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retryable(wecom, robot_config, status):
    wecom.fail_next(1, status=status)
    delivery = RobotChannel(robot_config()).send(message("hi"))
    assert (delivery.status, delivery.code) == (RETRYABLE, str(status))


def test_other_http_statuses_are_permanent(wecom, robot_config):
    delivery = RobotChannel(robot_config(base_url=wecom.url + "/nowhere")).send(message("hi"))
    assert (delivery.status, delivery.code) == (PERMANENT, "404")


def test_timeout_is_retryable(wecom, robot_config):
    wecom.fail_next(1, delay=1.0)
    delivery = RobotChannel(robot_config(timeout=0.2)).send(message("hi"))
    assert (delivery.status, delivery.code) == (RETRYABLE, "timeout")


def test_connection_refused_is_retryable(robot_config, unused_port):
    delivery = RobotChannel(robot_config(base_url=f"http://127.0.0.1:{unused_port}")).send(message("hi"))
    assert (delivery.status, delivery.code) == (RETRYABLE, "network")


def test_a_retry_resumes_after_the_delivered_parts(wecom, robot_config):
    channel = RobotChannel(robot_config())
    text = "茶" * 1500  # 3 parts
    wecom.fail_next(1, errcode=0)  # part 1 "delivered" by the fault, not recorded
    wecom.fail_next(1, errcode=-1)  # part 2 busy
    first = channel.send(message(text, key="split"))
    assert (first.status, first.code) == (RETRYABLE, "-1") and first.detail.startswith("part 2/3:")
    assert channel.send(message(text, key="split")).ok
    assert [part[:6] for part in contents(wecom)] == ["(2/3)\n", "(3/3)\n"]  # part 1 not posted again


def test_the_key_never_shows(wecom, robot_config, caplog, unused_port):
    caplog.set_level(logging.DEBUG)
    texts = []
    channel = RobotChannel(robot_config())
    texts.append(repr(channel))
    for fault in ({"errcode": -1}, {"errcode": 45009}, {"status": 500}, {"errcode": 93000}):
        wecom.fail_next(1, **fault)
        delivery = channel.send(message("hi"))
        texts += [delivery.code or "", delivery.detail or ""]
    refused = RobotChannel(robot_config(base_url=f"http://127.0.0.1:{unused_port}")).send(message("hi"))
    texts += [refused.code, refused.detail]
    with pytest.raises(ChannelConfigError) as error:
        RobotChannel(robot_config(key=""))
    texts.append(str(error.value))
    assert not [text for text in texts + [caplog.text] if ROBOT_KEY in text]


@pytest.mark.parametrize("settings", [{"timeout": "soon"}, {"timeout": 0}, {"base_url": "qyapi.weixin.qq.com"}])
def test_bad_settings_are_configuration_errors(robot_config, settings):
    with pytest.raises(ChannelConfigError):
        RobotChannel(robot_config(**settings))


def test_units_counts_the_robot_messages_a_send_posts(robot_config):
    from wecom_standin import message

    from rulecrm_wecom.robot import RobotChannel

    channel = RobotChannel(robot_config())
    assert channel.units(message("短消息")) == 1
    long_text = "茶" * 2000  # 6,000 bytes of UTF-8: three posts of at most 2048 bytes
    assert channel.units(message(long_text)) == len(channel.parts(long_text)) == 3


ODD_KEY = "0000-wrong key/+ü=&-robot-0000"  # a key a provider would echo encoded


@pytest.mark.parametrize("echo", [
    lambda key: key,
    lambda key: quote(key, safe=""),
    quote_plus,
    lambda key: quote(key, safe="").lower(),
    lambda key: key.replace(" ", "\n  "),
    lambda key: key[:12] + "...",  # cut short by the server
])
def test_an_echoed_key_is_masked_in_every_form(wecom, robot_config, caplog, echo):
    caplog.set_level(logging.DEBUG)
    wecom.echo_key = echo
    delivery = RobotChannel(robot_config(key=ODD_KEY)).send(message("hi"))
    assert (delivery.status, delivery.code) == (PERMANENT, "93000")
    assert delivery.detail.startswith("invalid webhook url, key=[secret]")
    for text in (delivery.detail, caplog.text):
        assert "0000-wrong" not in text and "robot-0000" not in text
