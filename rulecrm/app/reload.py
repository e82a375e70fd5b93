"""Noticing edits to rule files: a cheap fingerprint of (name, mtime, size) polled by the runner."""
from __future__ import annotations

import os
import time

from rulecrm.rulefile.loader import rule_files


def fingerprint(rules_path) -> tuple:
    """What changes when a rule file is edited, added, removed or renamed."""
    marks = []
    for path in rule_files(rules_path):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        marks.append((path, stat.st_mtime_ns, stat.st_size))
    return tuple(marks)


class RuleWatcher:
    """`changed()` is true once per new fingerprint, checked at most every `interval` seconds.

    An edit is acted on only after the files stayed the same for one interval, so a file caught
    half-written by an editor is not loaded (and then reported as broken) in passing.
    """

    def __init__(self, rules_path, *, interval: float = 1.0, clock=time.monotonic):
        self.rules_path = rules_path
        self.interval = interval
        self._clock = clock
        self._current = fingerprint(rules_path)
        self._candidate = None
        self._next_check = clock() + interval

    def changed(self) -> bool:
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        seen = fingerprint(self.rules_path)
        if seen == self._current:
            self._candidate = None
            return False
        if seen != self._candidate:
            self._candidate = seen  # wait one more interval for the edit to settle
            return False
        self._current, self._candidate = seen, None
        return True
