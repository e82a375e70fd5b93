"""rulecrm: a rules engine for private-domain customer operations.

The public API for plugin authors and embedding programs: the hook marker, the errors to catch,
the channel contract and the source contract. Names are imported on first use, so `import rulecrm`
(done by `rulecrm --version` and by the pytest plugin) loads nothing else.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "hookimpl": "rulecrm.hookspecs",
    "RulecrmError": "rulecrm.errors",
    "Diagnostic": "rulecrm.errors",
    "RuleFileError": "rulecrm.errors",
    "EventError": "rulecrm.errors",
    "StateError": "rulecrm.errors",
    "StorageError": "rulecrm.errors",
    "UsageError": "rulecrm.errors",
    "PluginError": "rulecrm.plugins",
    "ChannelType": "rulecrm.channels.contract",
    "ChannelConfig": "rulecrm.channels.contract",
    "ChannelConfigError": "rulecrm.channels.contract",
    "Delivery": "rulecrm.channels.contract",
    "Message": "rulecrm.channels.contract",
    "Setting": "rulecrm.channels.contract",
    "Limits": "rulecrm.channels.contract",
    "DELIVERED": "rulecrm.channels.contract",
    "RETRYABLE": "rulecrm.channels.contract",
    "PERMANENT": "rulecrm.channels.contract",
    "SourceType": "rulecrm.sources.contract",
    "SourceContext": "rulecrm.sources.contract",
    "Source": "rulecrm.sources.contract",
    "SourceError": "rulecrm.sources.contract",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # what type checkers and editors see; at run time `__getattr__` imports on demand
    from rulecrm.channels.contract import (
        DELIVERED,
        PERMANENT,
        RETRYABLE,
        ChannelConfig,
        ChannelConfigError,
        ChannelType,
        Delivery,
        Limits,
        Message,
        Setting,
    )
    from rulecrm.errors import Diagnostic, EventError, RulecrmError, RuleFileError, StateError, StorageError, UsageError
    from rulecrm.hookspecs import hookimpl
    from rulecrm.plugins import PluginError
    from rulecrm.sources.contract import Source, SourceContext, SourceError, SourceType


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rulecrm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
