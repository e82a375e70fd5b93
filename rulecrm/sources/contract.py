"""The event-source contract: what `rulecrm run --source NAME:ARG` builds and how the runner drives it.

A source is polled by the runner's single thread: `poll(limit)` returns what arrived as
(line_no, Event | Rejected) pairs without blocking; `commit(store)` runs inside the transaction that
applies them (a source records how far it got there, so a restart neither re-reads nor loses
input); `committed()` runs once that transaction is durable; `close()` at shutdown.

A source that reads one partition of its input per shard (the `redis` source of rulecrm-redis: one
stream per shard) keeps one position per shard, in that shard's state, in the transaction that
applies that shard's lines. It has three more methods, which the runner calls when present:
`open_shard(shard, store)` and `commit_shard(shard, store)` (the shard's own store, as `open` and
`commit` get the home shard's), and `origin(shard)`, the name its lines from that shard are kept
under in dead letters. Its `poll` returns (line_no, Event | Rejected, shard) triples, and a line is
applied in the shard it came from, or kept there as a dead letter if its customer lives in another
shard: never in another shard's transaction, which could commit without the position.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from rulecrm.errors import EventError, RulecrmError, SourceError  # noqa: F401 (re-exported: defined here before errors.py held them)

if TYPE_CHECKING:
    # Imported when a line is parsed: the plugin host imports this contract for every command, and
    # `check` needs neither events (hashlib, orjson) nor the file reader (tempfile, sqlite3).
    from rulecrm.events import Event
    from rulecrm.sources.reader import Rejected

Item = tuple[int, "Event | Rejected"]  # or (line_no, Event | Rejected, shard) from a source with positions per shard


@attrs.frozen
class SourceContext:
    """What a source factory gets besides its argument."""

    default_tz: Any  # the shop's time zone, for timestamps without an offset
    allow_remote: bool = False  # `run --allow-remote`: the http source may bind a non-loopback host
    on_message: Callable[[str], None] = attrs.field(default=lambda text: None)
    # the state's partitions and the runner's own shards; a state file is shard 0 of 1
    partitions: int = 1
    shards: tuple[int, ...] = (0,)


@attrs.frozen
class SourceType:
    """A kind of event source: `rulecrm run --source NAME:ARG` calls `factory(ARG, context)`."""

    name: str
    factory: Callable[[str, SourceContext], "Source"]
    description: str = ""


class Source(Protocol):
    name: str  # shown in messages and kept with dead letters, e.g. "jsonl:/data/events.jsonl"

    def open(self, store) -> None: ...

    def poll(self, limit: int) -> list[Item]: ...

    def commit(self, store) -> None: ...

    def committed(self) -> None: ...

    def close(self) -> None: ...


def parse_line(text: str, line_no: int, default_tz, occurrence=None) -> Event | Rejected:
    """One input line to an Event (id-less ones get a synthetic id) or a Rejected with the reason.

    `occurrence` numbers an id-less event for its synthetic id: an int, a callable given the parsed
    event (the http source counts identical contents), or None for the line number.
    """
    from rulecrm.events import parse_event_line, synthetic_id
    from rulecrm.sources.reader import Rejected

    try:
        event = parse_event_line(text, default_tz=default_tz)
        if event.id is None:
            number = occurrence(event) if callable(occurrence) else occurrence
            event = attrs.evolve(event, id=synthetic_id(event, number or line_no))
    except EventError as exc:
        return Rejected(line_no, text, exc.message)
    except Exception as exc:  # noqa: BLE001 - last defence: no input line may stop a source
        return Rejected(line_no, text, f"cannot be read: {type(exc).__name__}: {str(exc)[:200]}")
    return event


def _undecodable(raw: bytes, exc: UnicodeDecodeError) -> tuple[str, str]:
    r"""The raw text kept for a line that is not UTF-8, and the reason.

    The bad bytes stay recoverable as `\xNN` escapes: the store keeps text, and SQLite cannot take
    the lone surrogates a `surrogateescape` decoding would leave.
    """
    return raw.decode("utf-8", errors="backslashreplace"), f"not valid UTF-8 (byte {exc.start + 1} of the line)"


