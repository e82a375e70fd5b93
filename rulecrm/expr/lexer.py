"""Turns expression text into positioned tokens, one at a time, so a template can stop mid-text."""
from __future__ import annotations

import bisect
import re
from typing import Any

from rulecrm.errors import ExpressionError
from rulecrm.timeutil import DURATION_SYNTAX, parse_duration, within_limit

KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "matches", "true", "false", "null"})
# Numbers in rule files (expressions, caps, products, lifecycle) are at most this large either way,
# the same bound as numbers in events: exact as a double, and far below the 64 bits at which
# durable-rules saturates integers.
MAX_NUMBER = 2**53 - 1
MAX_NUMBER_TEXT = "a number within ±9007199254740991 (2^53 - 1)"

_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))+")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_WORD_CHAR = re.compile(r"\w")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",", ".")
_OPERATOR = re.compile("|".join(map(re.escape, _OPERATORS)))  # tried in that order: `<=` before `<`
# The common tokens in one match, whitespace before them included: a word or an operator. Numbers,
# strings, the end and stray characters take the slower paths of `Lexer.next`.
_WORD_OR_OPERATOR = re.compile(r"\s*(?:(?P<word>[^\W\d]\w*)|(?P<op>" + _OPERATOR.pattern + "))?")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}
_CHAR_HINTS = {
    "=": "use '==' to compare",
    "!": "use 'not' to negate, or '!=' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
    "\u201c": 'use straight quotes: "..."',
    "\u201d": 'use straight quotes: "..."',
    "\u2018": "use straight quotes: '...'",
    "\u2019": "use straight quotes: '...'",
}


class Token:
    """kind: number, duration, string, name, keyword, op, char (not part of the language) or end.

    A plain slotted class rather than an attrs one: `check` of a large rule set makes tens of
    thousands of tokens, and a frozen class sets each field through `object.__setattr__`."""

    __slots__ = ("kind", "value", "text", "start", "end", "line", "column")

    def __init__(self, kind: str, value: Any, text: str, start: int, end: int, line: int, column: int) -> None:
        self.kind = kind
        self.value = value
        self.text = text
        self.start = start
        self.end = end
        self.line = line
        self.column = column

    def __repr__(self) -> str:
        return f"Token({self.kind!r}, {self.value!r}, at {self.line}:{self.column})"

    def describe(self) -> str:
        if self.kind == "end":
            return "end of expression"
        return repr(self.text)


class Lexer:
    """Produces tokens of `text` from `offset` on; positions are absolute in the rule file."""

    def __init__(self, text: str, *, line: int = 1, column: int = 1, offset: int = 0):
        self.text = text
        self.pos = offset
        self._line = line
        self._column = column
        self._newlines = [i for i, c in enumerate(text) if c == "\n"] if "\n" in text else []
        # positions are then (line, column + offset), no look-up; a subclass that places characters
        # itself (templates inside YAML) overrides `position`, and every token goes through it
        self._one_line = not self._newlines and type(self).position is Lexer.position

    def position(self, offset: int) -> tuple[int, int]:
        """The absolute (line, column) of a character offset in the text."""
        before = bisect.bisect_left(self._newlines, offset)
        if before == 0:
            return self._line, self._column + offset
        return self._line + before, offset - self._newlines[before - 1]

    def error(self, message: str, offset: int, **details) -> ExpressionError:
        line, column = self.position(offset)
        return ExpressionError(message, line=line, column=column, **details)

    def next(self) -> Token:
        text = self.text
        match = _WORD_OR_OPERATOR.match(text, self.pos)
        pos = match.start(match.lastindex) if match.lastindex else match.end()
        self.pos = pos
        word = match.group("word")
        if word is not None:
            return self._token("keyword" if word in KEYWORDS else "name", word, pos, match.end())
        op = match.group("op")
        if op is not None:
            return self._token("op", op, pos, match.end())
        if pos >= len(text):
            return self._token("end", None, pos, pos)
        char = text[pos]
        if "0" <= char <= "9":
            return self._number(pos)
        if char in "\"'":
            return self._string(pos)
        return self._token("char", char, pos, pos + 1)

    def _token(self, kind: str, value: Any, start: int, end: int) -> Token:
        self.pos = end
        if self._one_line:  # as most expressions are
            return Token(kind, value, self.text[start:end], start, end, self._line, self._column + start)
        line, column = self.position(start)
        return Token(kind, value, self.text[start:end], start, end, line, column)

    def _number(self, start: int) -> Token:
        text = self.text
        match = _DURATION.match(text, start)
        if match and not self._word_follows(match.end()):
            spelled = match.group()
            try:
                value = parse_duration(spelled)
            except ValueError:
                value = None  # too large to represent at all
            if value is None or not within_limit(value):
                raise self.error(
                    f"duration {spelled[:40]!r} is longer than 100 years",
                    start,
                    expected="a duration of at most 36500d (100 years)",
                    found=repr(spelled[:40]),
                    hint="durations in rule files are limited to 100 years",
                )
            return self._token("duration", value, start, match.end())
        match = _NUMBER.match(text, start)
        end = match.end()
        if self._word_follows(end):
            stop = end
            while self._word_follows(stop):
                stop += 1
            found = text[start:stop]
            raise self.error(
                f"invalid number or duration {found!r}",
                start,
                expected=f"a number, or {DURATION_SYNTAX}",
                found=repr(found),
                hint="duration units are ms, s, m, h, d and w",
            )
        literal = match.group()
        try:
            value = float(literal) if match.group(1) or match.group(2) else int(literal)
        except (ValueError, OverflowError):
            value = None
        if value is None or not abs(value) <= MAX_NUMBER:  # also false for inf and nan
            raise self.error(
                f"number {literal[:20]!r} is out of range",
                start,
                expected=MAX_NUMBER_TEXT,
                found=repr(literal[:20]),
                hint="the largest number a rule can hold exactly is 9007199254740991",
            )
        return self._token("number", value, start, end)

    def _word_follows(self, offset: int) -> bool:
        return _WORD_CHAR.match(self.text, offset) is not None

    def _string(self, start: int) -> Token:
        text = self.text
        quote = text[start]
        chunks = []
        pos = start + 1
        while True:
            stop = pos
            while stop < len(text) and text[stop] != quote and text[stop] != "\\":
                stop += 1
            chunks.append(text[pos:stop])
            if stop >= len(text) or (text[stop] == "\\" and stop + 1 >= len(text)):
                raise self.error(
                    "unterminated string", start, expected=f"a closing {quote}", found="end of expression"
                )
            if text[stop] == quote:
                return self._token("string", "".join(chunks), start, stop + 1)
            escaped = text[stop + 1]
            chunks.append(_ESCAPES.get(escaped, "\\" + escaped))
            pos = stop + 2


def char_hint(char: str) -> str | None:
    """Advice for a character the language does not use (full-width punctuation, `=`, `&&` ...)."""
    if char in _CHAR_HINTS:
        return _CHAR_HINTS[char]
    if "\uff01" <= char <= "\uff5e":
        return f"use the ASCII character {chr(ord(char) - 0xFEE0)!r}"
    return None
