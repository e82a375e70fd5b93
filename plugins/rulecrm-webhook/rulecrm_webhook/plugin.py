"""The `webhook` channel type, found by rulecrm through the `rulecrm` entry point `webhook`."""
from __future__ import annotations

from rulecrm.channels import ChannelConfig, ChannelType, Limits, Setting
from rulecrm.hookspecs import hookimpl

from .settings import DEFAULT_TIMEOUT


def _webhook_channel(config: ChannelConfig):
    # imported when a channel is built: rulecrm loads this module in every command
    from .channel import WebhookChannel

    return WebhookChannel(config)


SETTINGS = (
    Setting("url", required=True, help="the http:// or https:// address each message is POSTed to"),
    Setting("secret", secret=True, help="HMAC-SHA256 signing key, given as `secret_env: VARIABLE` (recommended)"),
    Setting("timeout", help=f"seconds to wait for the receiver's answer (default {DEFAULT_TIMEOUT:g})"),
    Setting("per_minute", help="the receiver's rate limit, messages per minute (default: none)"),
)

WEBHOOK = ChannelType(
    "webhook",
    _webhook_channel,
    settings=SETTINGS,
    limits=Limits(per_minute=None),
    description="POSTs each message as HMAC-signed JSON to an HTTP endpoint",
    thread_safe=True,  # no state shared between sends, or behind a lock
)


@hookimpl
def rulecrm_channel_types():
    return [WEBHOOK]
