"""Event sources: the contract, the built-in `jsonl` and `http` sources, and the time-ordered file reader."""
from typing import Any

from rulecrm.sources.contract import Item, Source, SourceContext, SourceError, SourceType, parse_line

__all__ = ["HttpSource", "Item", "JsonlFollowSource", "Source", "SourceContext", "SourceError", "SourceType",
           "parse_line"]


def __getattr__(name: str) -> Any:
    # the sources themselves load on first use (http.server is slow to import and `check` never needs it)
    if name == "HttpSource":
        from rulecrm.sources.http import HttpSource

        return HttpSource
    if name == "JsonlFollowSource":
        from rulecrm.sources.jsonl import JsonlFollowSource

        return JsonlFollowSource
    raise AttributeError(f"module 'rulecrm.sources' has no attribute {name!r}")
