"""The channel instances of a rule set, built through the plugin manager's channel types."""
from __future__ import annotations

import os

from rulecrm import plugins
from rulecrm.channels import ChannelConfig, ChannelConfigError, ChannelType
from rulecrm.rulefile.channels import CONCURRENCY, DEFAULT_CONCURRENCY, MAX_CONCURRENCY

CONSOLE = "console"  # exists without being declared


class ChannelSet:
    """Every channel the rule files declare (plus `console`), built once, closed together.

    Building happens up front so a missing environment variable or a bad setting is reported before
    anything runs (`ChannelConfigError`, naming the channel). A channel whose type no installed
    plugin provides is not an error here: actions routed to it go `dead` with `unavailable(name)`.
    """

    def __init__(self, ruleset, manager, *, env=None):
        env = os.environ if env is None else env
        self._env = env
        self.types: dict[str, ChannelType] = plugins.channel_types(manager)
        self.declared = {c.name: c for c in ruleset.channels}
        self.instances: dict = {}
        self.type_of: dict[str, ChannelType] = {}
        self._missing: dict[str, str] = {}
        try:
            for name, declared in self.declared.items():
                self._build(name, declared.type, dict(declared.settings), env)
            if CONSOLE not in self.declared:
                self._build(CONSOLE, CONSOLE, {}, env)
        except BaseException:
            self.close()
            raise

    def _build(self, name, type_name, settings, env) -> None:
        channel_type = self.types.get(type_name)
        if channel_type is None:
            known = ", ".join(sorted(self.types)) or "none"
            self._missing[name] = (
                f"channel {name!r} has type {type_name!r}, which no installed plugin provides "
                f"(installed: {known}); install the plugin or change the type"
            )
            return
        config = ChannelConfig(name=name, type=type_name, settings=settings, env=env)
        try:
            self.instances[name] = channel_type.factory(config)
        except ChannelConfigError:
            raise
        except Exception as exc:
            raise ChannelConfigError(f"channel {name!r} (type {type_name!r}) cannot be built: {exc}") from exc
        self.type_of[name] = channel_type

    def get(self, name):
        """(instance, type) for a channel name, or (None, reason) when it cannot deliver."""
        if name in self.instances:
            return self.instances[name], self.type_of[name]
        if name in self._missing:
            return None, self._missing[name]
        return None, f"channel {name!r} is not declared in the rule files"

    def rate_bucket(self, name) -> tuple:
        """The budget a channel shares: (type, value of its `rate_key` setting), else (type, channel)."""
        channel_type = self.type_of[name]
        key = channel_type.limits.rate_key
        settings = dict(self.declared[name].settings) if name in self.declared else {}
        if key is not None:
            value = settings.get(key)
            if value is None and settings.get(f"{key}_env") is not None:
                value = "env:" + str(settings[f"{key}_env"])  # the variable's name, never its value
            if value is not None:
                return channel_type.name, str(value)
        return channel_type.name, "channel:" + name

    def concurrency(self, name) -> int:
        """How many sends of this channel may be in flight at once: its `concurrency` setting (default
        DEFAULT_CONCURRENCY) when its type is thread-safe, else 1."""
        channel_type = self.type_of.get(name)
        if channel_type is None or not channel_type.thread_safe:
            return 1
        declared = self.declared.get(name)
        value = dict(declared.settings).get(CONCURRENCY) if declared is not None else None
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CONCURRENCY:
            return value
        return DEFAULT_CONCURRENCY

    def secrets(self, name) -> tuple[str, ...]:
        """The values of the channel's `*_env` settings: what its errors must never show."""
        declared = self.declared.get(name)
        if declared is None:
            return ()
        variables = [value for key, value in dict(declared.settings).items() if key.endswith("_env")]
        return tuple(self._env[v] for v in variables if isinstance(v, str) and self._env.get(v))

    def all_secrets(self) -> tuple[str, ...]:
        """Every declared channel's secrets (for messages that cannot be tied to one channel)."""
        return tuple(secret for name in self.declared for secret in self.secrets(name))

    def tag_channel(self, name) -> ChannelType | None:
        """The channel's type when it syncs tags, else None."""
        channel_type = self.type_of.get(name)
        return channel_type if channel_type is not None and channel_type.supports_tags else None

    def close(self) -> list[tuple[str, Exception]]:
        """Close every instance; returns (name, exception) for those that failed to close."""
        problems = []
        for name, instance in self.instances.items():
            try:
                instance.close()
            except Exception as exc:  # one bad close must not keep the others open
                problems.append((name, exc))
        self.instances = {}
        return problems
