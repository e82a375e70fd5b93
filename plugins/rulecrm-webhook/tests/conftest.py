"""Fixtures: a live receiver per test and a factory for channels aimed at it."""
from __future__ import annotations

import pytest
from webhook_receiver import SECRET, SECRET_ENV, Receiver, serve

from rulecrm.channels import ChannelConfig
from rulecrm_webhook import WebhookChannel
from rulecrm_webhook.plugin import WEBHOOK


@pytest.fixture
def receiver():
    """A receiver that verifies signatures made with `SECRET`."""
    receiver = Receiver(SECRET)
    server = serve(receiver)
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_channel(receiver):
    """Build a webhook channel aimed at the receiver; settings and env override the defaults."""
    def make(env=None, clock=None, **settings):
        settings = {"url": receiver.url, "secret_env": SECRET_ENV, **settings}
        settings = {name: value for name, value in settings.items() if value is not None}
        env = {SECRET_ENV: SECRET} if env is None else env
        config = ChannelConfig("hooks", "webhook", settings, env)
        return WEBHOOK.factory(config) if clock is None else WebhookChannel(config, clock=clock)

    return make
