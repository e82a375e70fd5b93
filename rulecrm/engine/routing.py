"""Who a notification goes to: the channel and address for `to: customer | owner | <contact>`."""
from __future__ import annotations

import attrs

# Channel types that name the customer by id and need no address field (docs/rules.md, Rules).
ADDRESSLESS_TYPES = frozenset({"console", "jsonl", "memory"})


@attrs.frozen
class Route:
    channel: str | None  # None: a staff recipient with no channel to reach them on
    address: str | None  # None: the recipient has no address on that channel


class Router:
    """Resolves recipients against the rule set's channels and contacts and the customer's profile.

    `address_fields` maps a channel type to the profile field holding a customer's address on it
    (e.g. "wecom_id", "phone", "email"); types without an entry name the customer by id.
    """

    def __init__(self, ruleset, address_fields=None):
        self._channels = {c.name: c for c in ruleset.channels}
        self._contacts = {c.name: c for c in ruleset.contacts}
        self._address_fields = dict(address_fields or {})

    def _preferred(self, profile) -> str:
        preferred = profile.fields.get("channel")
        if preferred in self._channels or preferred == "console":
            return preferred
        return "console"

    def _customer_address(self, channel: str, profile) -> str | None:
        declared = self._channels.get(channel)
        channel_type = declared.type if declared else channel
        field = (declared.setting("address_field") if declared else None) or self._address_fields.get(channel_type)
        if field is None:
            return profile.id
        value = profile.fields.get(field)
        return value if isinstance(value, str) and value else None

    def route(self, notify, profile) -> Route:
        """Customers get their preferred channel when the rule names none; staff never do (docs/rules.md):
        an internal note must not go out on a customer-facing channel."""
        if notify.to == "customer":
            channel = notify.channel or self._preferred(profile)
            return Route(channel, self._customer_address(channel, profile))
        if notify.to == "owner":
            owner = profile.fields.get("owner")
            if not isinstance(owner, str) or not owner:
                return Route(notify.channel, None)
            contact = self._contacts.get(owner)
            if contact is not None:
                return Route(notify.channel or contact.channel, contact.address)
            # An owner who is no contact is reachable only on a channel the rule names for staff.
            return Route(notify.channel, owner if notify.channel else None)
        contact = self._contacts[notify.to]  # `check` guarantees the contact exists
        return Route(notify.channel or contact.channel, contact.address)
