"""Event sources: the contract, the built-in `jsonl` and `http` sources, and the time-ordered file reader."""
from rulecrm.sources.contract import Item, Source, SourceContext, SourceError, SourceType, parse_line
from rulecrm.sources.http import HttpSource
from rulecrm.sources.jsonl import JsonlFollowSource

__all__ = ["HttpSource", "Item", "JsonlFollowSource", "Source", "SourceContext", "SourceError", "SourceType",
           "parse_line"]
