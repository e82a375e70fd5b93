"""The `wecom-contact` channel against the stand-in API: tokens, mass-send tasks, tag sync."""
from __future__ import annotations

import logging

import pytest
from wecom_standin import CONTACT_SECRET, message

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, ChannelConfigError
from rulecrm_wecom.contact import ContactChannel


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def gettokens(wecom):
    return wecom.requests_to("/cgi-bin/gettoken")


def test_send_creates_a_single_chat_mass_send_task(wecom, contact_config):
    delivery = ContactChannel(contact_config()).send(message("您好，小青柑到货了"))
    assert delivery.status == DELIVERED and "rep-li" in delivery.detail
    assert wecom.tasks == [{"chat_type": "single", "external_userid": ["wm-alice"], "sender": "rep-li",
                            "text": {"content": "您好，小青柑到货了"}}]
    [gettoken] = gettokens(wecom)
    assert gettoken["method"] == "GET" and gettoken["query"] == {"corpid": "corp-1", "corpsecret": CONTACT_SECRET}


def test_a_customer_wecom_refuses_is_permanent(wecom, contact_config):
    delivery = ContactChannel(contact_config()).send(message("hi", address="wm-stranger"))
    assert (delivery.status, delivery.code) == (PERMANENT, "fail_list")


def test_no_address_and_too_long_text_are_permanent(wecom, contact_config):
    channel = ContactChannel(contact_config())
    assert channel.send(message("hi", address="")).code == "no-address"
    assert channel.send(message("茶" * 1400)).code == "too-long"
    assert not wecom.received


def test_the_token_is_fetched_once_and_reused(wecom, contact_config):
    channel = ContactChannel(contact_config())
    for i in range(3):
        assert channel.send(message(f"#{i}", key=f"k-{i}")).ok
    assert len(gettokens(wecom)) == 1
    tokens = {r["query"]["access_token"] for r in wecom.requests_to("/cgi-bin/externalcontact/add_msg_template")}
    assert len(tokens) == 1


def test_the_token_is_refreshed_before_expires_in(wecom, contact_config):
    clock = Clock()
    channel = ContactChannel(contact_config(), clock=clock)
    channel.send(message("a"))
    clock.now += 7200 - 301
    channel.send(message("b"))
    assert len(gettokens(wecom)) == 1
    clock.now += 2
    channel.send(message("c"))
    assert len(gettokens(wecom)) == 2


@pytest.mark.parametrize("revoke", ["expire", "forget"])
def test_a_rejected_token_is_replaced_once_and_the_call_repeated(wecom, contact_config, revoke):
    channel = ContactChannel(contact_config())
    channel.send(message("a"))
    if revoke == "expire":
        wecom.expire_tokens()  # 42001
    else:
        wecom.tokens.clear()  # 40014
    assert channel.send(message("b")).ok
    assert len(gettokens(wecom)) == 2
    assert [task["text"]["content"] for task in wecom.tasks] == ["a", "b"]


def test_a_token_rejected_twice_is_not_retried_forever(wecom, contact_config):
    channel = ContactChannel(contact_config())
    channel.send(message("a"))
    wecom.expire_tokens()
    wecom.issue_expired = True
    delivery = channel.send(message("b"))
    assert (delivery.status, delivery.code) == (PERMANENT, "42001")
    assert len(gettokens(wecom)) == 2
    assert len(wecom.requests_to("/cgi-bin/externalcontact/add_msg_template")) == 3  # a, b, b once more


def test_a_wrong_secret_is_permanent_and_masked(wecom, contact_config, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-value"
    delivery = ContactChannel(contact_config(secret=wrong)).send(message("hi"))
    assert (delivery.status, delivery.code) == (PERMANENT, "40001")
    assert wrong not in (delivery.detail + caplog.text)


@pytest.mark.parametrize(("fault", "code"), [({"errcode": -1}, "-1"), ({"errcode": 45009}, "45009"),
                                             ({"status": 502}, "502")])
def test_busy_rate_and_5xx_are_retryable(wecom, contact_config, fault, code):
    channel = ContactChannel(contact_config())
    channel.send(message("warm up"))
    wecom.fail_next(1, **fault)
    delivery = channel.send(message("hi"))
    assert (delivery.status, delivery.code) == (RETRYABLE, code)


def test_gettoken_busy_is_retryable(wecom, contact_config):
    wecom.fail_next(1, errcode=-1)
    delivery = ContactChannel(contact_config()).send(message("hi"))
    assert (delivery.status, delivery.code) == (RETRYABLE, "-1")


def test_tag_sync_maps_names_to_ids_and_creates_missing_ones(wecom, contact_config):
    existing = wecom.add_tag_group("客户等级", "repeat-buyer", "vip")
    channel = ContactChannel(contact_config())
    delivery = channel.sync_tags("c-1", "wm-alice", ["repeat-buyer", "high-intent"], ["vip", "never-made"])
    assert delivery.status == DELIVERED
    [created] = wecom.requests_to("/cgi-bin/externalcontact/add_corp_tag")
    assert created["body"] == {"group_name": "rulecrm", "tag": [{"name": "high-intent"}]}
    [mark] = wecom.marks
    assert mark["userid"] == "rep-li" and mark["external_userid"] == "wm-alice"
    assert [wecom.tag_name(t) for t in mark["add_tag"]] == ["repeat-buyer", "high-intent"]
    assert mark["remove_tag"] == [existing["vip"]]  # a tag WeCom never had is skipped


def test_tag_ids_are_cached(wecom, contact_config):
    channel = ContactChannel(contact_config())
    channel.sync_tags("c-1", "wm-alice", ["high-intent"], [])
    channel.sync_tags("c-2", "wm-bob", ["high-intent"], [])
    assert len(wecom.requests_to("/cgi-bin/externalcontact/get_corp_tag_list")) == 1
    assert len(wecom.requests_to("/cgi-bin/externalcontact/add_corp_tag")) == 1
    assert len(wecom.marks) == 2


def test_tag_group_setting_and_its_precedence(wecom, contact_config):
    wecom.add_tag_group("other", "vip")
    ours = wecom.add_tag_group("运营", "vip")
    channel = ContactChannel(contact_config(tag_group="运营"))
    assert channel.sync_tags("c-1", "wm-alice", ["vip", "new"], []).ok
    assert wecom.marks[0]["add_tag"][0] == ours["vip"]
    assert wecom.requests_to("/cgi-bin/externalcontact/add_corp_tag")[0]["body"]["group_name"] == "运营"


def test_a_deleted_tag_is_reloaded_after_the_failure(wecom, contact_config):
    channel = ContactChannel(contact_config())
    assert channel.sync_tags("c-1", "wm-alice", ["vip"], []).ok
    wecom.tag_groups.clear()  # an admin deleted every tag
    failed = channel.sync_tags("c-1", "wm-alice", ["vip"], [])
    assert (failed.status, failed.code) == (PERMANENT, "40068")
    assert channel.sync_tags("c-1", "wm-alice", ["vip"], []).ok
    assert wecom.tag_name(wecom.marks[-1]["add_tag"][0]) == "vip"


def test_nothing_to_sync_calls_nothing(wecom, contact_config):
    channel = ContactChannel(contact_config())
    assert channel.sync_tags("c-1", "wm-alice", [], []).ok
    assert channel.sync_tags("c-1", "wm-alice", [], ["never-made"]).ok
    assert not wecom.marks and not wecom.requests_to("/cgi-bin/externalcontact/add_corp_tag")


def test_tag_sync_errors_map_like_sends(wecom, contact_config):
    channel = ContactChannel(contact_config())
    assert channel.sync_tags("c-9", "", ["vip"], []).code == "no-address"
    not_a_contact = channel.sync_tags("c-9", "wm-stranger", ["vip"], [])
    assert (not_a_contact.status, not_a_contact.code) == (PERMANENT, "84061")
    wecom.fail_next(1, errcode=-1)
    busy = channel.sync_tags("c-1", "wm-alice", ["vip"], [])
    assert (busy.status, busy.code) == (RETRYABLE, "-1")


def test_secret_and_token_never_show(wecom, contact_config, caplog):
    caplog.set_level(logging.DEBUG)
    channel = ContactChannel(contact_config())
    channel.send(message("warm up"))
    token = next(iter(wecom.tokens))
    details = [repr(channel)]
    for fault in ({"errcode": -1}, {"status": 500}, {"errcode": 45009}):
        wecom.fail_next(1, **fault)
        details.append(channel.send(message("hi")).detail)
        wecom.fail_next(1, **fault)
        details.append(channel.sync_tags("c-1", "wm-alice", ["vip"], []).detail)
    text = " ".join(details) + caplog.text
    assert CONTACT_SECRET not in text and token not in text


def test_sender_is_required(contact_config):
    with pytest.raises(ChannelConfigError, match="sender"):
        ContactChannel(contact_config(sender=""))
