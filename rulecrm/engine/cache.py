"""A bounded cache of recently used customers' state, evicted only when the engine has flushed.

Memory must not grow with the number of customers (docs/running.md, "Memory"). Two generations
give an approximate LRU with plain dict operations: an entry used again moves to the young
generation; when the young one outgrows `capacity` at a flush, the old one is dropped and the
young one becomes old. Eviction happens only right after a flush, so an entry with unwritten
changes is never lost. The engine flushes as soon as a cache is `full()`, so a cache holds at most
about 2 × `capacity` entries.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

Value = TypeVar("Value")

# Customers kept in memory between steps. A profile takes about 1-3 KB in memory, so the default bounds
# the profile cache to a few hundred MB at most; RULECRM_CACHE_CUSTOMERS changes it (docs/running.md).
DEFAULT_CAPACITY = 50_000


def configured_capacity() -> int:
    text = os.environ.get("RULECRM_CACHE_CUSTOMERS", "")
    try:
        value = int(text)
    except ValueError:
        return DEFAULT_CAPACITY
    return max(1, value)


class RecentCache(Generic[Value]):
    """Values by key, loaded with `load(key)` on a miss; `trim()` after a flush keeps the size bounded."""

    def __init__(self, load: Callable[[str], Value], capacity: int | None = None) -> None:
        self._load = load
        self.capacity = capacity if capacity is not None else configured_capacity()
        self._young: dict[str, Value] = {}
        self._old: dict[str, Value] = {}

    def get(self, key: str) -> Value:
        value = self._young.get(key)
        if value is None:
            value = self._old.pop(key, None)
            if value is None:
                value = self._load(key)
            self._young[key] = value
        return value

    def full(self) -> bool:
        """Whether the recently used generation outgrew the capacity (`trim` would drop the older one)."""
        return len(self._young) > self.capacity

    def trim(self) -> None:
        """Call only when every change is written: drops the least recently used generation if too big."""
        if len(self._young) > self.capacity:
            self._old = self._young
            self._young = {}

    def clear(self) -> None:
        self._young.clear()
        self._old.clear()

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def __iter__(self) -> Iterator[str]:
        yield from self._young
        yield from (key for key in self._old if key not in self._young)
