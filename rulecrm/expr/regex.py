"""`matches` runs on RE2: time linear in the text whatever the pattern, so customer text cannot stall a run.

Python's `re` backtracks: `(a+)+$` against forty `a`s and a `!` takes minutes. RE2 refuses the
features that need backtracking (backreferences, lookarounds, possessive and atomic groups), and
`check` turns that refusal into a positioned error through `check_pattern`.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable

from rulecrm.errors import PatternError

# RE2's own words for what it refused, and what to write instead.
_HINTS = (
    (re.compile(r"invalid escape sequence: \\[1-9]"),
     "RE2 has no backreferences (they need backtracking, which can take exponential time); "
     "spell the repeated text out, or test it in a second condition"),
    (re.compile(r"invalid escape sequence: \\Z"), "write \\z (end of text) or $"),
    (re.compile(r"invalid escape sequence: \\[uUN]"), "write a code point as \\x{4e2d}"),
    (re.compile(r"invalid perl operator: \(\?P[=>]"), "RE2 has no backreferences; spell the repeated text out"),
    (re.compile(r"invalid perl operator: \(\?<?[=!]"),
     "RE2 has no lookahead or lookbehind; join two conditions instead: "
     "event.text matches \"a\" and not (event.text matches \"b\")"),
    (re.compile(r"invalid perl operator: \(\?>"), "RE2 has no atomic groups and never backtracks: drop the ?>"),
    (re.compile(r"invalid perl operator: \(\?#"), "RE2 has no inline comments: remove the (?#...)"),
    (re.compile(r"invalid perl operator: \(\?"), "RE2's inline flags are i, m, s and U, e.g. (?i)"),
    (re.compile(r"bad repetition operator: .[+]"),
     "RE2 has no possessive quantifiers and never backtracks: drop the second +"),
    (re.compile(r"bad repetition operator"), "a repetition cannot repeat another directly: group it, e.g. (a*)*"),
    (re.compile(r"invalid repetition size"),
     "RE2 allows at most 1000 repetitions, and nested counts multiply: use + or * instead"),
    (re.compile(r"pattern too large"),
     "the compiled pattern is larger than RE2's memory limit: split it into several `matches` joined with 'or'"),
)
_SYNTAX_HINT = "escape special characters such as ( [ + * ? with a backslash"
# Perl classes are ASCII-only in RE2 (Python's `re` reads them over all of Unicode).
_ASCII_CLASSES = {
    "d": "\\d is [0-9] only (not １２３): write [0-9] to say so, or \\p{Nd} for every digit",
    "w": "\\w is [0-9A-Za-z_] only (not 中文 or é): write \\p{L} for letters of every script",
    "s": "\\s is [\\t\\n\\f\\r ] only (not the full-width space): write \\p{Z} or [\\s\\x{3000}]",
    "b": "\\b is an ASCII word boundary: there is none between two Chinese characters",
    "D": "\\D is anything but [0-9], so it matches １２３: write \\P{Nd} for anything but a digit",
    "W": "\\W is anything but [0-9A-Za-z_], so it matches 中文 and é: write \\P{L} for anything but a letter",
    "S": "\\S is anything but [\\t\\n\\f\\r ], so it matches the full-width space: write [^\\s\\x{3000}]",
    "B": "\\B holds wherever \\b does not, so also between two Chinese characters",
}
_EMPTY_MIN = re.compile(r"\{,[0-9]+\}")


_engine = None


def _re2():
    """The google-re2 module, checked once: other packages install a `re2` module too, and some of
    them silently fall back to Python's `re` (and its exponential time) for patterns RE2 refuses."""
    global _engine
    if _engine is None:
        try:
            import re2
        except ImportError:
            raise PatternError("`matches` needs the google-re2 package, which is not installed",
                               hint="pip install google-re2") from None
        if not (hasattr(re2, "Options") and hasattr(re2, "_re2")) or hasattr(re2, "set_fallback_notification"):
            raise PatternError("the installed `re2` module is not google-re2 (it may fall back to Python's re)",
                               hint="pip uninstall re2 pyre2; pip install google-re2")
        _engine = re2
    return _engine


def _compile(pattern: str):
    return _compiled(_re2(), pattern)


@functools.lru_cache(maxsize=512)  # `check` compiles each pattern twice (parser, checker), the engine once more
def _compiled(re2, pattern: str):
    options = re2.Options()
    options.log_errors = False  # refusals are reported by `check`, not written to stderr
    try:
        return re2.compile(pattern, options)
    except UnicodeEncodeError as exc:
        raise PatternError("the pattern is not valid Unicode text", exc.start) from None
    except re2.error as exc:
        detail = exc.args[0] if exc.args else "refused"
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        offset = _offset(pattern, detail)
        raise PatternError(f"RE2 cannot run this pattern: {detail}", offset, _hint(detail, pattern, offset)) from None
    except Exception as exc:  # noqa: BLE001 - anything else from the C++ side is still the pattern's fault
        raise PatternError(f"RE2 cannot run this pattern: {exc}") from None


def _offset(pattern: str, detail: str) -> int | None:
    """Where the fragment RE2 quotes after its message (`invalid escape sequence: \\1`) starts."""
    if detail.startswith(("missing )", "unexpected )")):
        return _unbalanced(pattern)
    _, _, fragment = detail.partition(": ")
    at = pattern.find(fragment) if fragment else -1
    while fragment == "(?P" and pattern.startswith("(?P<", at):  # a named group is fine: find the bad one
        at = pattern.find(fragment, at + 1)
    return at if at >= 0 else None


def _unbalanced(pattern: str) -> int | None:
    """The first `)` that closes nothing, else the first `(` left open."""
    opened = []
    for at, char, escaped, in_class in _scan(pattern):
        if escaped or in_class:
            continue
        if char == "(":
            opened.append(at)
        elif char == ")":
            if not opened:
                return at
            opened.pop()
    return opened[0] if opened else None


def _hint(detail: str, pattern: str, offset: int | None) -> str:
    # RE2 quotes only the start of a group (`(?P`): add what follows it in the pattern.
    probe = detail + (pattern[offset + 3:offset + 4] if offset is not None else "")
    for known, hint in _HINTS:
        if known.search(probe):
            return hint
    return _SYNTAX_HINT


def _scan(pattern: str):
    """(offset, character, escaped, in_class) for each character of a pattern outside \\Q...\\E."""
    in_class = False
    at = 0
    while at < len(pattern):
        char = pattern[at]
        if char == "\\" and at + 1 < len(pattern):
            following = pattern[at + 1]
            if following == "Q":  # literal text up to \E
                end = pattern.find("\\E", at + 2)
                at = len(pattern) if end < 0 else end + 2
                continue
            yield at, following, True, in_class
            at += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
            elif char == "[" and pattern.startswith("[:", at):
                close = pattern.find(":]", at + 2)
                if close >= 0:
                    at = close + 2
                    continue
        elif char == "[":
            in_class = True
            at += 1
            # a `]` right after `[` or `[^` is a literal member of the class
            if pattern.startswith("^", at):
                at += 1
            if pattern.startswith("]", at):
                at += 1
            continue
        yield at, char, False, in_class
        at += 1


def check_pattern(pattern: str) -> list[tuple[int, str]]:
    """Raise PatternError when RE2 refuses the pattern or would read it differently from how it
    looks; otherwise the warnings about it, as (offset, text) pairs."""
    _compile(pattern)
    warnings = []
    seen = set()
    for at, char, escaped, in_class in _scan(pattern):
        if not escaped and not in_class and char == "{":
            match = _EMPTY_MIN.match(pattern, at)
            if match:
                text = match.group()
                raise PatternError(
                    f"{text} is not a repetition in RE2: it matches the text {text!r} literally", at,
                    f"write {{0,{text[2:-1]}}} for up to {text[2:-1]} repetitions, or \\{text} for the literal text",
                )
        if escaped and char in _ASCII_CLASSES and char not in seen:
            seen.add(char)
            warnings.append((at, _ASCII_CLASSES[char]))
    return warnings


def compile_search(pattern: str) -> Callable[[str], bool]:
    """`text -> bool`: whether the pattern is found anywhere in the text (RE2 search semantics)."""
    search = _compile(pattern).search

    def found(text: str) -> bool:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (not valid Unicode): RE2 reads each as one character it cannot name.
            data = text.encode("utf-8", "surrogatepass")
        return search(data) is not None

    return found
