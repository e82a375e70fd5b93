"""The engine's named values: action statuses, timer kinds and what became of an input event."""
from __future__ import annotations

from enum import Enum


class TextEnum(str, Enum):
    """Members are their text: equal to it, hashed like it, and written as it in JSON, SQLite and f-strings."""

    __str__ = str.__str__
    __format__ = str.__format__


class Status(TextEnum):
    """Where an action stands; the dispatcher moves a queued one on to sent, failed or dead."""

    PENDING = "pending"
    SENT = "sent"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"
    QUEUED = "queued"
    FAILED = "failed"
    DEAD = "dead"


class TimerKind(TextEnum):
    """What a timer does when it fires (its payload's "type")."""

    AFTER = "after"  # a rule's delayed effect
    ESCALATE = "escalate"  # one step of a rule's escalation
    RELEASE = "release"  # retry a send held by quiet hours or a deferring cap
    STAGE = "stage"  # the customer's next lifecycle transition
    BIRTHDAY = "birthday"  # a birthday rule's next occurrence


class Outcome(TextEnum):
    """What `Engine.ingest_outcome` did with an event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this id with the same content was applied before
    CONFLICT = "conflict"  # this id was applied before with different content; not applied
