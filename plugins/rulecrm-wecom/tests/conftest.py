"""Fixtures: a stand-in WeCom server per test, and channel configs pointing at it."""
from __future__ import annotations

import socket

import pytest
from wecom_standin import CONTACT_SECRET, ROBOT_KEY, StandIn, serve

from rulecrm.channels import ChannelConfig


@pytest.fixture
def wecom():
    """A running stand-in WeCom server (`wecom.url`), stopped after the test."""
    state = StandIn(robot_keys={ROBOT_KEY}, secret=CONTACT_SECRET, customers={"wm-alice", "wm-bob"},
                    staff={"rep-li"})
    server, state.url = serve(state)
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def robot_config(wecom):
    """Builds a `wecom-robot` ChannelConfig against the stand-in; keyword arguments are settings."""

    def build(key=ROBOT_KEY, **settings):
        return ChannelConfig(name="robot", type="wecom-robot",
                             settings={"key_env": "WECOM_ROBOT_KEY", "base_url": wecom.url, **settings},
                             env={"WECOM_ROBOT_KEY": key})

    return build


@pytest.fixture
def contact_config(wecom):
    """Builds a `wecom-contact` ChannelConfig against the stand-in; keyword arguments are settings."""

    def build(secret=CONTACT_SECRET, **settings):
        values = {"corp_id": "corp-1", "secret_env": "WECOM_SECRET", "sender": "rep-li", "base_url": wecom.url}
        return ChannelConfig(name="wecom", type="wecom-contact", settings={**values, **settings},
                             env={"WECOM_SECRET": secret})

    return build



@pytest.fixture
def unused_port():
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
