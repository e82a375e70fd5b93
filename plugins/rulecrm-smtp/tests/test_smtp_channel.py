"""The smtp channel against a live aiosmtpd server: the e-mail it builds and how each answer is classed."""
from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
import yaml
from smtp_server import PASSWORD, USERNAME, message

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, ChannelConfigError
from rulecrm_smtp import KEY_HEADER, message_id, subject_and_body
from rulecrm_smtp.channel import SmtpChannel
from rulecrm_smtp.plugin import SMTP

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # a test server

CREDENTIALS = {"username_env": "SMTP_USER", "password_env": "SMTP_PASSWORD"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_delivers_a_utf8_email(server, make_channel):
    delivery = make_channel(server.port).send(message())

    assert (delivery.status, delivery.code) == (DELIVERED, "250")
    [envelope] = server.envelopes
    assert envelope.mail_from == "shop@example.com" and envelope.rcpt_tos == ["lin@example.com"]
    [email] = server.emails()
    assert email["Subject"] == "您的茶快喝完了"
    assert email["From"].addresses[0].display_name == "茶叶铺"
    assert email["To"] == "lin@example.com"
    assert email.get_content_type() == "text/plain" and email.get_content_charset() == "utf-8"
    assert email.get_content() == "林女士，您好！小青柑还剩几泡？\n"
    assert envelope.content.isascii()  # 7-bit clean: encoded words and base64


def test_message_id_and_key_header_come_from_the_action_key(server, make_channel):
    channel = make_channel(server.port)
    channel.send(message())
    channel.send(message())
    channel.send(message(key="refill|c-2|e-11"))
    first, again, other = server.emails()
    assert first[KEY_HEADER] == "refill|c-1|e-9"
    assert first["Message-ID"] == again["Message-ID"] == message_id("refill|c-1|e-9", "shop@example.com")
    assert other["Message-ID"] != first["Message-ID"]
    assert first["Message-ID"].startswith("<rulecrm.") and first["Message-ID"].endswith("@example.com>")
    assert first["Date"] is not None


@pytest.mark.parametrize(("fields", "subject", "body"), [
    ({"text": "Subject: 您的茶快喝完了\n\n林女士，您好"}, "您的茶快喝完了", "林女士，您好"),
    ({"text": "Subject:  Refill time \r\n\r\nHello"}, "Refill time", "Hello"),
    ({"text": "Subject: 忽略\n\nbody", "subject": "Given subject"}, "Given subject", "body"),
    ({"text": "Just text", "subject": "Given\nsubject"}, "Given subject", "Just text"),
    ({"text": "Subject: no blank line\nbody"}, "rulecrm: refill", "Subject: no blank line\nbody"),
    ({"text": "Hello\n\nSubject: late\n\nx"}, "rulecrm: refill", "Hello\n\nSubject: late\n\nx"),
])
def test_subject_convention(fields, subject, body):
    assert subject_and_body(message(**fields)) == (subject, body)


def test_default_subject_setting(server, make_channel):
    make_channel(server.port, subject="来自茶叶铺").send(message(text="没有主题的消息"))
    [email] = server.emails()
    assert email["Subject"] == "来自茶叶铺" and email.get_content() == "没有主题的消息\n"


def test_451_is_retryable(server, make_channel):
    server.refuse["lin@example.com"] = "451 4.3.0 Mailbox for lin@example.com busy, try later"
    delivery = make_channel(server.port).send(message())
    assert (delivery.status, delivery.code) == (RETRYABLE, "451")
    assert "4.3.0" in delivery.detail and "l***@example.com" in delivery.detail
    assert "lin@example.com" not in delivery.detail
    assert server.envelopes == []


def test_550_is_permanent(server, make_channel):
    server.refuse["lin@example.com"] = "550 5.1.1 Mailbox unavailable"
    delivery = make_channel(server.port).send(message())
    assert (delivery.status, delivery.code) == (PERMANENT, "550")
    assert delivery.detail == "550 5.1.1 Mailbox unavailable"


def test_other_recipients_still_delivered(server, make_channel):
    server.refuse["lin@example.com"] = "550 5.1.1 Mailbox unavailable"
    channel = make_channel(server.port)
    assert not channel.send(message()).ok
    assert channel.send(message(address="wang@example.com")).ok


def test_connection_refused_is_retryable(make_channel):
    delivery = make_channel(free_port()).send(message())
    assert delivery.status == RETRYABLE and delivery.code is None
    assert "cannot reach the server" in delivery.detail


def test_silent_server_times_out_retryable(make_channel):
    with socket.socket() as silent:  # accepts connections (backlog) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        delivery = make_channel(silent.getsockname()[1], timeout=0.3).send(message())
    assert delivery.status == RETRYABLE
    assert time.monotonic() - started < 3


def test_not_an_email_address_is_permanent(server, make_channel):
    delivery = make_channel(server.port).send(message(address="c-1"))
    assert delivery.status == PERMANENT and "not an e-mail address" in delivery.detail
    assert server.envelopes == []


def test_auth_with_credentials_from_the_environment(auth_server, make_channel, caplog):
    caplog.set_level(logging.DEBUG)
    env = {"SMTP_USER": USERNAME, "SMTP_PASSWORD": PASSWORD}
    channel = make_channel(auth_server.port, env=env, **CREDENTIALS)

    assert channel.send(message()).ok
    assert auth_server.logins == [(USERNAME, PASSWORD)]
    assert len(auth_server.envelopes) == 1
    assert PASSWORD not in caplog.text and USERNAME not in caplog.text and PASSWORD not in repr(channel)


def test_wrong_password_is_permanent_and_not_shown(auth_server, make_channel, caplog):
    caplog.set_level(logging.DEBUG)
    env = {"SMTP_USER": USERNAME, "SMTP_PASSWORD": "not-the-password"}
    delivery = make_channel(auth_server.port, env=env, **CREDENTIALS).send(message())
    assert (delivery.status, delivery.code) == (PERMANENT, "535")
    assert "not-the-password" not in f"{delivery.detail} {caplog.text}"


def test_server_requiring_auth_refuses_anonymous_mail(auth_server, make_channel):
    delivery = make_channel(auth_server.port).send(message())
    assert (delivery.status, delivery.code) == (PERMANENT, "530")


@pytest.mark.parametrize(("settings", "env", "complaint"), [
    ({"host": None}, None, "set `host`"),
    ({"sender": None}, None, "set `sender`"),
    ({"sender": "the shop"}, None, "`sender` must be an e-mail address"),
    ({"port": "smtp"}, None, "`port` must be a positive int"),
    ({"starttls": "yes"}, None, "`starttls` must be true or false"),
    ({"port": 465, "starttls": True}, None, "port 465 is SMTPS"),
    ({"username_env": "SMTP_USER"}, {"SMTP_USER": USERNAME}, "set both"),
    (CREDENTIALS, {"SMTP_USER": USERNAME}, "environment variable SMTP_PASSWORD is not set"),
])
def test_bad_settings_are_reported(make_channel, settings, env, complaint):
    with pytest.raises(ChannelConfigError, match="mail") as raised:
        make_channel(**{"port": 25, **settings}, env=env)
    assert complaint in str(raised.value) and PASSWORD not in str(raised.value)


def test_port_465_means_smtps_and_defaults(make_channel):
    assert make_channel(465).smtps
    channel = make_channel(None, timeout=None)
    assert (channel.port, channel.smtps, channel.starttls, channel.timeout) == (25, False, False, 30.0)
    assert SMTP.address_field == "email" and isinstance(channel, SmtpChannel)


def test_non_ascii_key_survives_in_the_header(server, make_channel):
    assert make_channel(server.port).send(message(key="refill|林-01|e-9")).ok
    [email] = server.emails()
    assert email[KEY_HEADER] == "refill|林-01|e-9"


def test_readme_template_example_follows_the_convention():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    [line] = [line for line in readme.splitlines() if line.strip().startswith("template:")]
    template = yaml.safe_load(line)["template"]
    subject, body = subject_and_body(message(text=template.replace("{customer.name}", "林女士")))
    assert subject == "您的茶快喝完了" and body.startswith("林女士，您好！")


def test_starttls_on_a_server_without_it_is_permanent(server, make_channel):
    delivery = make_channel(server.port, starttls=True).send(message())
    assert delivery.status == PERMANENT and "STARTTLS" in delivery.detail
    assert server.envelopes == []


def test_a_key_that_cannot_be_a_header_is_permanent(server, make_channel):
    delivery = make_channel(server.port).send(message(key="refill|c-1\nBcc: x@evil.test|e-9"))
    assert delivery.status == PERMANENT and "cannot build" in delivery.detail
    assert server.envelopes == []
