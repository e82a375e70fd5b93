"""The `smtp` channel type, found by rulecrm through the `rulecrm` entry point `smtp`."""
from __future__ import annotations

from rulecrm.channels import ChannelConfig, ChannelType, Setting
from rulecrm.hookspecs import hookimpl

from .settings import DEFAULT_PORT, DEFAULT_TIMEOUT


def _smtp_channel(config: ChannelConfig):
    # imported when a channel is built: rulecrm loads this module in every command
    from .channel import SmtpChannel

    return SmtpChannel(config)


SETTINGS = (
    Setting("host", required=True, help="the SMTP server's host name"),
    Setting("port", help=f"the SMTP server's port (default {DEFAULT_PORT}; 465 means SMTPS)"),
    Setting("sender", required=True, help="the From address, e.g. `茶叶铺 <shop@example.com>`"),
    Setting("username", secret=True, help="login name, given as `username_env: VARIABLE`"),
    Setting("password", secret=True, help="login password, given as `password_env: VARIABLE`"),
    Setting("starttls", help="upgrade the connection with STARTTLS (default false)"),
    Setting("timeout", help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT:g})"),
    Setting("subject", help="subject of messages that name none (default `rulecrm: <rule id>`)"),
)

SMTP = ChannelType(
    "smtp",
    _smtp_channel,
    settings=SETTINGS,
    address_field="email",
    description="sends each message as an e-mail through an SMTP server",
    thread_safe=True,  # no state shared between sends, or behind a lock
)


@hookimpl
def rulecrm_channel_types():
    return [SMTP]
