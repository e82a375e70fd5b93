"""`rulecrm run`'s one way to stderr: each message as its text (`--log-format text`) or as one JSON line (`json`).

A JSON line is `{"time", "level", "message", ...fields}`: `time` in ISO 8601 UTC, `level` one of
info, warning, error, `message` the text mode's line exactly (so masked exactly as it is), then the
message's fields (`rulecrm.logline`). The JSON is ASCII (`\\u` escapes), so no terminal or locale
encoding can break a line.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

import click

from rulecrm.logline import fields_of, level_of

FORMATS = ("text", "json")
RESERVED = ("time", "level", "message")


def stderr_log(log_format: str = "text", *, clock: Callable[[], float] = time.time) -> Callable[[str], None]:
    """A function writing one message to stderr in `log_format`; one write per message, so lines stay whole."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    if log_format == "text":
        return lambda text: click.echo(str(text), err=True)
    return lambda text: click.echo(json_line(text, clock()), err=True)


def json_line(text: str, epoch: float) -> str:
    record = {
        "time": datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level_of(text),
        "message": str(text),
    }
    for name, value in fields_of(text).items():
        if name not in RESERVED:  # a field never hides what every line has
            record[name] = value
    return json.dumps(record, ensure_ascii=True, default=str)
