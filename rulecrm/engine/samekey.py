"""The one equality of `unless: <type> same <field>` values, for replacing and for cancelling timers.

Two values are the same when their keys are equal. The key is the value's JSON text with numbers
compared as numbers (an integral float is written as the integer: 1 and 1.0 are the same) and kinds
kept apart (true is not 1, "1" is not 1). Lists and objects compare element by element, object keys
in sorted order. A missing or null value has no key: it never cancels anything.
"""
from __future__ import annotations

import json
from typing import Any

# Beyond this many bits an int's decimal text hits Python's int-to-str limit; hex has none.
_DECIMAL_BITS = 10_000


def same_key(value: Any) -> str | None:
    """The canonical text of a correlation value, or None for a missing/null one."""
    if value is None:
        return None
    out: list[str] = []
    # Iterative so that a deeply nested value cannot exhaust the stack.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Text):
            out.append(item)
        elif isinstance(item, dict):
            # Pushed last key first, each value before its `"key": ` prefix, so they pop in order.
            stack.append(_Text("}"))
            keys = sorted(item, key=str)
            for index in range(len(keys) - 1, -1, -1):
                stack.append(item[keys[index]])
                stack.append(_Text((", " if index else "") + json.dumps(str(keys[index])) + ": "))
            out.append("{")
        elif isinstance(item, (list, tuple)):
            stack.append(_Text("]"))
            for index in range(len(item) - 1, -1, -1):
                stack.append(item[index])
                if index:
                    stack.append(_Text(", "))
            out.append("[")
        else:
            out.append(_scalar(item))
    return "".join(out)


class _Text(str):
    """Punctuation already in its final form (as opposed to a string value, which gets quoted)."""


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= _DECIMAL_BITS else f"0x{value:x}"
    if isinstance(value, float):
        if value.is_integer():
            return _scalar(int(value))
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(str(value))
