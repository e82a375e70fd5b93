"""The rulecrm plugin: declares the `wecom-robot` and `wecom-contact` channel types."""
from __future__ import annotations

from rulecrm.channels import ChannelConfig, ChannelType, Limits, Setting
from rulecrm.hookspecs import hookimpl

from .settings import DEFAULT_BASE_URL, DEFAULT_TAG_GROUP


# The channels are imported when one is built: rulecrm loads this module in every command, and the
# channels' HTTP client, logging and secret masking are most of the plugin's start-up.
def _robot_channel(config: ChannelConfig):
    from .robot import RobotChannel

    return RobotChannel(config)


def _contact_channel(config: ChannelConfig):
    from .contact import ContactChannel

    return ContactChannel(config)


ROBOT = ChannelType(
    "wecom-robot",
    _robot_channel,
    settings=(
        Setting("key", required=True, secret=True, help="the robot's webhook key (or its whole webhook URL)"),
        Setting("base_url", help=f"API root, default {DEFAULT_BASE_URL}"),
        Setting("msgtype", help="text (default) or markdown"),
        Setting("mentioned_list", help="staff userids to @ (list or comma-separated; @all for everyone)"),
        Setting("mentioned_mobile_list", help="staff mobile numbers to @ (text messages only)"),
        Setting("timeout", help="seconds to wait for WeCom, default 10"),
    ),
    limits=Limits(per_minute=20, max_bytes=2048, rate_key="key_env"),
    address_field=None,
    description="posts to a WeCom group through its group robot webhook; the address is not used",
    thread_safe=True,  # no state shared between sends, or behind a lock
)

CONTACT = ChannelType(
    "wecom-contact",
    _contact_channel,
    settings=(
        Setting("corp_id", required=True, help="the corp id (企业ID)"),
        Setting("secret", required=True, secret=True, help="the customer-contact secret (客户联系 secret)"),
        Setting("sender", required=True, help="userid of the rep whose mass-send tasks carry the messages"),
        Setting("base_url", help=f"API root, default {DEFAULT_BASE_URL}"),
        Setting("tag_group", help=f"corp tag group new tags are created in, default {DEFAULT_TAG_GROUP!r}"),
        Setting("timeout", help="seconds to wait for WeCom, default 10"),
    ),
    limits=Limits(per_minute=60, max_bytes=4000, rate_key="corp_id"),
    supports_tags=True,
    address_field="wecom_id",
    description="queues single-customer mass-send tasks for a rep to confirm; syncs tags as corp tags",
    thread_safe=True,  # no state shared between sends, or behind a lock
)


@hookimpl
def rulecrm_channel_types():
    return [ROBOT, CONTACT]
