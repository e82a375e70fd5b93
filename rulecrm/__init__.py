"""rulecrm: a rules engine for private-domain customer operations.

The public API for plugin authors and embedding programs: the hook marker, the errors to catch,
the channel contract and the source contract, and `lazy_exports` for plugin packages. Names are
imported on first use, so `import rulecrm` (done by `rulecrm --version` and by the pytest plugin)
loads nothing else.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
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

__all__ = ["__version__", "lazy_exports", *_EXPORTS]

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


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) for the package whose globals are `namespace`: `exports` maps
    each public name to the module defining it (absolute, or relative to the package: ".channel").

    rulecrm's own names load this way, and so do its plugins' packages: rulecrm imports each plugin's
    package for its entry point in every command, so one that re-exported its channel class would
    load the whole channel (HTTP, e-mail, logging) just to declare it.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # later look-ups find it without calling this
        return value

    return __getattr__


__getattr__ = lazy_exports(globals(), _EXPORTS)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
