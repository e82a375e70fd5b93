"""The event sources rulecrm ships (`jsonl`, `http`), registered through `rulecrm_event_sources` like any plugin's."""
from __future__ import annotations

from rulecrm.hookspecs import hookimpl
from rulecrm.sources.contract import SourceType


def _jsonl(arg, context):
    from rulecrm.sources.jsonl import JsonlFollowSource

    return JsonlFollowSource(arg, context)


def _http(arg, context):
    # http.server is imported only by a runner that serves: `check` and `replay` start faster without it
    from rulecrm.sources.http import HttpSource

    return HttpSource(arg, context)


@hookimpl
def rulecrm_event_sources():
    return [
        SourceType("jsonl", _jsonl, description="follows a JSONL file as it grows (jsonl:PATH)"),
        SourceType("http", _http, description="POST /events on a loopback address (http:HOST:PORT)"),
    ]
