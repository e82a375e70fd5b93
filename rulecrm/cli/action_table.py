"""`rulecrm replay --format table`: the actions as a table for people at a terminal.

It is a text stream: the replay writes its action JSON lines to it (as to `--out`) and each comes out
as one row at once, so the table streams like the JSONL does. Columns have fixed widths (the rows
are not known in advance); the message takes what is left of the terminal's width, and every cell
is cut to its width in terminal columns (a Chinese character takes two).
"""
from __future__ import annotations

import unicodedata

import orjson

# (heading, width); the message column comes last and takes the rest
_COLUMNS = (("time", 16), ("customer", 10), ("rule", 16), ("kind", 8), ("status", 10), ("channel", 8),
            ("reason", 18))
MIN_MESSAGE = 20  # the message column's width on a terminal narrower than 113 columns (rows are then wider)
ELLIPSIS = "…"


class ActionTable:
    """Writes a heading, then one row per action JSON line written to it, to `stream`."""

    def __init__(self, stream, width: int = 120):
        self._stream = stream
        fixed = sum(w for _name, w in _COLUMNS) + len(_COLUMNS)  # a space after each column
        self._widths = [w for _name, w in _COLUMNS] + [max(MIN_MESSAGE, width - fixed)]
        self._stream.write(self._row([name for name, _w in _COLUMNS] + ["message"]))
        self._stream.write(self._row(["-" * w for w in self._widths]))

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line:
                self._stream.write(self._row(_cells(orjson.loads(line))))

    def flush(self) -> None:
        self._stream.flush()

    def _row(self, cells: list[str]) -> str:
        fitted = [fit(cell, width) for cell, width in zip(cells, self._widths, strict=True)]
        return " ".join(fitted[:-1] + [fitted[-1].rstrip()]) + "\n"


def _cells(action: dict) -> list[str]:
    when = action.get("sent_at") or action.get("due_at") or ""
    # a tag or untag has no message: its tag (`to`) says what it did; one line, as a newline would break the row
    message = " ".join(str(action.get("message") or action.get("to") or "").split())
    return [when[:16].replace("T", " "), action.get("customer_id") or "", action.get("rule") or "",
            action.get("kind") or "", action.get("status") or "", action.get("channel") or "",
            action.get("reason") or "", message]


def fit(text: str, width: int) -> str:
    """`text` cut (with an ellipsis) or padded to exactly `width` terminal columns."""
    if display_width(text) > width:
        kept, used = [], 0
        for char in text:
            if used + display_width(char) > width - 1:
                break
            kept.append(char)
            used += display_width(char)
        text = "".join(kept) + ELLIPSIS
    return text + " " * (width - display_width(text))


def display_width(text: str) -> int:
    """Terminal columns: East Asian wide and full-width characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
