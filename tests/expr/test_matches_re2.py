"""`matches` runs on RE2: customer text cannot stall the engine, and `check` refuses what RE2 cannot run."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import types

import pytest
from helpers import ev, write_events, write_rules

from rulecrm.backends import available_backends
from rulecrm.backends.durable_plan import Untranslatable, translate
from rulecrm.errors import ExpressionError
from rulecrm.expr import regex
from rulecrm.expr.compiler import compile_condition
from rulecrm.expr.context import EvalContext
from rulecrm.expr.parser import parse_expression
from rulecrm.rulefile.loader import check_rules

EVIL = "(a+)+$"  # Python's re takes about 2^n steps on n `a`s and a `!`: a minute at 30 characters
CHAT_RULES = """
rules:
  - id: evil
    on: chat.received
    when: event.text matches "(a+)+$"
    tag: all-a
  - id: intent
    on: chat.received
    when: event.text matches "近期|最近|下周"
    tag: high-intent
"""


# Runs in a child process: Python's re holds the GIL while it backtracks, so a regression could not
# even be timed out from a thread; the child's timeout turns it into a failure instead of a hang.
_REPLAY = """
import io, json, sys, time
from rulecrm.app.replay import replay
rules, events, backend = sys.argv[1:]
out = io.StringIO()
started = time.perf_counter()
replay(rules, events, out=out, backend_name=backend)
elapsed = time.perf_counter() - started
print(json.dumps({"elapsed": elapsed, "actions": [json.loads(line) for line in out.getvalue().splitlines()]}))
"""


@pytest.mark.parametrize("backend", available_backends())
def test_a_catastrophic_pattern_on_a_long_message_finishes_fast_through_the_engine(tmp_path, backend):
    hostile = "a" * 10_000 + "!"
    events = [
        ev("chat.received", "c-1", "2026-03-01T10:00:00+08:00", id="e1", text=hostile),
        ev("chat.received", "c-2", "2026-03-01T10:00:01+08:00", id="e2", text="a" * 10_000),
        ev("chat.received", "c-3", "2026-03-01T10:00:02+08:00", id="e3", text="我近期想买"),
    ]
    rules = write_rules(tmp_path, CHAT_RULES)
    events_path = write_events(tmp_path, events)
    try:
        child = subprocess.run([sys.executable, "-c", _REPLAY, str(rules), str(events_path), backend],
                               capture_output=True, text=True, timeout=60, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the replay did not finish within 60 s: `matches` backtracks")
    result = json.loads(child.stdout)
    # Python's re needs ~2^10000 steps here, RE2 microseconds: 2 s cannot be flaky.
    assert result["elapsed"] < 2.0, result["elapsed"]
    tagged = sorted((a["customer_id"], a["to"]) for a in result["actions"] if a["kind"] == "tag")
    assert tagged == [("c-2", "all-a"), ("c-3", "high-intent")]


def test_matches_is_linear_in_the_text():
    condition = compile_condition(parse_expression('event.text matches "(x+x+)+y"'))
    for size in (10, 1_000, 100_000):
        started = time.perf_counter()
        assert condition(EvalContext(event={"text": "x" * size})) is False
        assert time.perf_counter() - started < 1.0
    assert condition(EvalContext(event={"text": "xxy"})) is True


def test_the_durable_backend_leaves_matches_to_the_re2_closure():
    # durable-rules' own `$mt` is a Lua-like pattern language: it must never see a `matches`.
    with pytest.raises(Untranslatable):
        translate(parse_expression('event.text matches "a"'))


def check(tmp_path, when: str):
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules:\n  - id: r\n    on: chat.received\n    when: '{when}'\n    tag: t\n", encoding="utf-8")
    return check_rules(path)


WHEN_COLUMN = len("    when: '") + 1
PATTERN_COLUMN = WHEN_COLUMN + len('event.text matches "')


@pytest.mark.parametrize(
    ("pattern", "offset", "hint"),
    [
        (r"(a)\1", 3, "no backreferences"),
        (r"(?P<n>a)(?P=n)", 8, "no backreferences"),
        (r"buy(?=now)", 3, "no lookahead or lookbehind"),
        (r"(?<!not )buy", 0, "no lookahead or lookbehind"),
        (r"a++", 1, "no possessive quantifiers"),
        (r"(?>ab)c", 0, "no atomic groups"),
        (r"end\Z", 3, r"write \z"),
        (r"\u4e2d", 0, r"\x{4e2d}"),
        (r"(?x) a b", 0, "inline flags are i, m, s and U"),
        (r"a{1001}", 1, "at most 1000 repetitions"),
        (r"a{,3}", 1, "write {0,3}"),
        (r"ab(c", 2, "escape special characters"),
        (r"ab)c", 2, "escape special characters"),
        (r"a**", 1, "group it"),
    ],
)
def test_check_refuses_patterns_re2_cannot_run_with_a_position_and_a_hint(tmp_path, pattern, offset, hint):
    ruleset, diagnostics = check(tmp_path, f'event.text matches "{pattern}"')
    assert ruleset is None
    [error] = [d for d in diagnostics if d.is_error]
    assert (error.line, error.column) == (4, PATTERN_COLUMN + offset), error.format()
    assert "regular expression" in error.message
    assert "RE2" in error.expected
    assert hint in error.hint, error.hint


def test_re2_refusals_are_not_logged_to_stderr(capfd):
    with pytest.raises(ExpressionError):
        parse_expression(r'event.text matches "(a)\1"')
    assert capfd.readouterr().err == ""


def test_ascii_only_classes_are_a_warning_that_says_what_to_write(tmp_path):
    ruleset, diagnostics = check(tmp_path, r'event.text matches "\d+" or event.text matches "[\w]\s"')
    assert ruleset is not None
    warnings = [d for d in diagnostics if d.severity == "warning"]
    assert [w.message for w in warnings] == [r"in RE2 \d is ASCII-only", r"in RE2 \w is ASCII-only",
                                             r"in RE2 \s is ASCII-only"]
    assert r"\p{Nd}" in warnings[0].hint and r"\p{L}" in warnings[1].hint
    assert all(w.line == 4 and w.column > WHEN_COLUMN for w in warnings)
    _, negated = check(tmp_path, r'event.text matches "\D"')
    assert [w.message for w in negated] == [r"in RE2 \D is ASCII-only"] and "matches １２３" in negated[0].hint


@pytest.mark.parametrize("pattern", [r"\{,3}", r"[{,3}]", r"\Q{,3}\E", "a{0,3}", r"\p{Han}+", r"(?i)vip", r"\x{4e2d}"])
def test_patterns_re2_reads_as_written_pass(tmp_path, pattern):
    ruleset, diagnostics = check(tmp_path, f'event.text matches "{pattern}"')
    assert ruleset is not None, [d.format() for d in diagnostics]


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("近期|最近", "我近期想买", True),
        (r"\p{Han}{2}", "ab中文", True),
        (r"\d", "１２３", False),  # ASCII digits only, as the warning says
        (r"\p{Nd}", "１２３", True),
        ("stop$", "stop\n", False),  # `$` is the end of the text, not before a final newline
        ("(?i)VIP", "vip", True),
        ("^.近期", "\ud800近期", True),  # a lone surrogate is one character, never an exception
        ("", "", True),
    ],
)
def test_matches_semantics_are_re2s(pattern, text, expected):
    condition = compile_condition(parse_expression(f'event.text matches "{pattern}"'))
    assert condition(EvalContext(event={"text": text})) is expected


def test_another_re2_module_that_falls_back_to_python_re_is_refused(monkeypatch):
    # pyre2-style modules named `re2` run refused patterns on Python's re: exponential time again.
    impostor = types.ModuleType("re2")
    impostor.compile = lambda *args, **kwargs: None
    impostor.set_fallback_notification = lambda *args: None
    monkeypatch.setitem(sys.modules, "re2", impostor)
    monkeypatch.setattr(regex, "_engine", None)
    with pytest.raises(regex.PatternError, match="not google-re2"):
        regex.check_pattern("a")
    monkeypatch.setitem(sys.modules, "re2", None)  # not installed at all
    with pytest.raises(regex.PatternError, match="google-re2 package"):
        regex.compile_search("a")


def test_check_reports_a_missing_re2_as_a_positioned_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "re2", None)
    monkeypatch.setattr(regex, "_engine", None)
    ruleset, diagnostics = check(tmp_path, 'event.text matches "a"')
    assert ruleset is None
    [error] = diagnostics
    assert error.line == 4 and "pip install google-re2" in error.hint
