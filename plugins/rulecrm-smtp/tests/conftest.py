"""Fixtures: a live SMTP server per test (optionally requiring AUTH) and a channel factory aimed at it."""
from __future__ import annotations

import pytest
from smtp_server import LocalController, Recorder

from rulecrm.channels import ChannelConfig
from rulecrm_smtp.plugin import SMTP


def _serve(**options):
    recorder = Recorder()
    controller = LocalController(recorder, enable_SMTPUTF8=True, authenticator=recorder.authenticate,
                                 auth_require_tls=False, **options)
    controller.start()
    return recorder, controller


@pytest.fixture
def server():
    """An open relay: anyone may send."""
    recorder, controller = _serve()
    recorder.port = controller.port
    yield recorder
    controller.stop()


@pytest.fixture
def auth_server():
    """A server that takes mail only after AUTH as USERNAME/PASSWORD."""
    recorder, controller = _serve(auth_required=True)
    recorder.port = controller.port
    yield recorder
    controller.stop()


@pytest.fixture
def make_channel():
    """Build an smtp channel for a port on 127.0.0.1 (settings and env as a rule file and the environment give them)."""

    def make(port, env=None, **settings):
        settings = {"host": "127.0.0.1", "port": port, "sender": "茶叶铺 <shop@example.com>",
                    "timeout": 5, **settings}
        settings = {name: value for name, value in settings.items() if value is not None}
        return SMTP.factory(ChannelConfig("mail", "smtp", settings, env or {}))

    return make
