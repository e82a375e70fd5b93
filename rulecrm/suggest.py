"""Did-you-mean suggestions for misspelled keys, fields, event types, channels and contacts."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The candidate most like `word`, or None when nothing is close enough."""
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """A hint sentence such as "did you mean 'rating'?", or None."""
    match = closest(word, candidates, cutoff=cutoff)
    return f"did you mean {match!r}?" if match else None
