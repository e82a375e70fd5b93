"""Channels: the contract channel types implement, the built-in ones, the instances of a rule set,
delivery from the outbox and the per-channel rate limits.

The contract is re-exported here, so plugins write `from rulecrm.channels import ChannelType, Delivery`.
"""
from rulecrm.channels.contract import (
    DELIVERED,
    PERMANENT,
    RETRYABLE,
    Channel,
    ChannelConfig,
    ChannelConfigError,
    ChannelType,
    Delivery,
    Limits,
    Message,
    Setting,
)

__all__ = ["DELIVERED", "PERMANENT", "RETRYABLE", "Channel", "ChannelConfig", "ChannelConfigError", "ChannelType",
           "Delivery", "Limits", "Message", "Setting"]
