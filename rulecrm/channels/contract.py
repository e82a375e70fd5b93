"""The channel contract: what a channel type declares and what sending returns."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from rulecrm.errors import ChannelConfigError, RulecrmError  # noqa: F401 (re-exported: defined here before errors.py held them)

DELIVERED = "delivered"
RETRYABLE = "retryable"
PERMANENT = "permanent"


@attrs.frozen
class Setting:
    """One setting a channel type accepts in the rule file (`channels: name: {type, <settings>}`).

    A `secret` setting is never written in the rule file: it is given as `<name>_env`, naming the
    environment variable that holds it.
    """

    name: str
    required: bool = False
    secret: bool = False
    help: str = ""


@attrs.frozen
class Limits:
    """What the provider allows: messages per minute (per `rate_key` setting value), text size."""

    per_minute: int | None = None
    max_bytes: int | None = None
    rate_key: str | None = None  # the setting whose value shares one rate budget (e.g. the robot key)


@attrs.frozen
class Delivery:
    """A channel's answer to one send: delivered, or an error worth retrying, or a final one."""

    status: str  # DELIVERED | RETRYABLE | PERMANENT
    code: str | None = None  # the provider's own code (HTTP status, errcode, SMTP reply)
    detail: str | None = None
    retry_after: float | None = None  # seconds, when the provider said

    @property
    def ok(self) -> bool:
        return self.status == DELIVERED


@attrs.frozen
class Message:
    """What a channel sends: built from an action after it passed every gate."""

    key: str  # the action's idempotency key: receivers may de-duplicate on it
    channel: str  # the channel instance name
    address: str
    text: str
    kind: str  # marketing | service | transactional
    customer_id: str
    rule: str
    subject: str | None = None


class Channel(Protocol):
    """What a channel instance does. Optional extras the dispatcher uses when present:
    `limits` (a `Limits` for this instance, overriding its type's), `units(message) -> int` (how
    many of the provider's messages this send takes, for rate limits), and
    `sync_tags(customer_id, address, add, remove) -> Delivery` on types that support tags."""

    def send(self, message: Message) -> Delivery: ...

    def close(self) -> None: ...


@attrs.frozen
class ChannelConfig:
    """A declared channel instance as its factory sees it; secrets come from `env`, by name."""

    name: str
    type: str
    settings: Mapping[str, Any]
    env: Mapping[str, str] = attrs.field(factory=dict)

    def get(self, key, default=None):
        return self.settings.get(key, default)

    def positive(self, key: str, default, kind=float):
        """A setting that must be a positive number of `kind` (int or float), or `default` when absent."""
        value = self.settings.get(key)
        if value is None:
            return default
        try:
            number = kind(value)
            valid = not isinstance(value, bool) and number > 0 and number == float(value)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ChannelConfigError(
                f"channel {self.name!r}: `{key}` must be a positive {kind.__name__}, found {value!r}")
        return number

    def flag(self, key: str, default: bool = False) -> bool:
        """A setting that must be true or false."""
        value = self.settings.get(key, default)
        if not isinstance(value, bool):
            raise ChannelConfigError(f"channel {self.name!r}: `{key}` must be true or false, found {value!r}")
        return value

    def secret(self, key: str) -> str:
        """The value of the environment variable named by `<key>_env` (never logged)."""
        variable = self.settings.get(f"{key}_env")
        if not variable:
            raise ChannelConfigError(f"channel {self.name!r}: set {key}_env to the name of an environment variable")
        value = self.env.get(variable)
        if not value:
            raise ChannelConfigError(f"channel {self.name!r}: environment variable {variable} is not set")
        return value


@attrs.frozen
class ChannelType:
    """A kind of channel a plugin provides.

    `factory(config)` builds a channel instance; `address_field` names the customer profile field
    holding a customer's address on this channel (None: the customer id); `supports_tags`: the
    channel syncs tag actions (its instances then implement `sync_tags(customer_id, address, add,
    remove) -> Delivery`). `thread_safe`: its instances may be called from several threads at once, so
    a channel's `concurrency` setting applies; otherwise each instance gets one call at a time.
    """

    name: str
    factory: Callable[[ChannelConfig], Channel]
    settings: tuple[Setting, ...] = ()
    limits: Limits = Limits()
    supports_tags: bool = False
    address_field: str | None = None
    description: str = ""
    thread_safe: bool = False

    @property
    def setting_names(self) -> frozenset[str]:
        names = set()
        for setting in self.settings:
            names.add(f"{setting.name}_env" if setting.secret else setting.name)
        return frozenset(names)
