"""The event sources rulecrm ships (`jsonl`, `http`), registered through `rulecrm_event_sources` like any plugin's."""
from __future__ import annotations

from rulecrm.hookspecs import hookimpl
from rulecrm.sources.contract import SourceType
from rulecrm.sources.http import HttpSource
from rulecrm.sources.jsonl import JsonlFollowSource


@hookimpl
def rulecrm_event_sources():
    return [
        SourceType("jsonl", JsonlFollowSource, description="follows a JSONL file as it grows (jsonl:PATH)"),
        SourceType("http", HttpSource, description="POST /events on a loopback address (http:HOST:PORT)"),
    ]
