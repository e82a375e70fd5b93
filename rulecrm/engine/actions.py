"""Actions the engine decides, their deterministic keys and the JSON form written to the outbox and --out."""
from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from rulecrm.engine.enums import Status
from rulecrm.timeutil import format_duration, isoformat, parse_timestamp

FINAL_STATUSES = frozenset({Status.SENT, Status.SUPPRESSED, Status.FAILED, Status.DEAD})


def action_key(rule_id: str, customer_id: str, trigger_id: str, step: str | None = None) -> str:
    """(rule, customer, trigger, step): the same decision always gets the same key."""
    parts = [rule_id, customer_id, trigger_id]
    if step:
        parts.append(step)
    return "|".join(parts)


# Not slotted: a frozen slotted class sets each of its 19 fields through `object.__setattr__`, while a
# frozen class with a `__dict__` fills the dict directly, and `given` can copy it whole. Every decision
# builds one or two actions, and none stays in memory past the next flush.
@attrs.frozen(slots=False)
class Action:
    """One decision about one customer; each change of status is a new value (`attrs.evolve`)."""

    key: str
    rule: str
    customer_id: str
    kind: str  # tag | untag | notify | escalate | stage
    to: str | None
    due_at: datetime
    rule_index: int = 0
    trigger: str | None = None
    channel: str | None = None
    address: str | None = None
    message_kind: str | None = None  # marketing | service | transactional (notify / escalate)
    message: str | None = None
    status: Status = Status.PENDING  # sent | suppressed | deferred; with dispatch also queued | failed | dead
    reason: str | None = None
    sent_at: datetime | None = None
    step: int | None = None
    late_by: timedelta | None = None  # escalations: how long the item had waited
    defers: int = 0  # times a deferring cap rescheduled it
    reported_status: Status | None = None  # the status last handed to the output (reported once each)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def given(self, *, status: Status, reason: str | None, sent_at: datetime | None, due_at: datetime,
              reported_status: Status | None) -> Action:
        """This action with a new status (what `Outbox.finish` changes): `attrs.evolve` with these
        fields, done by copying the instance's fields at once, because every decided action goes through
        it and evolve costs several times more. `tests/engine/test_engine_parts.py` checks that it keeps
        every other field."""
        changed = object.__new__(Action)
        fields = changed.__dict__
        fields.update(self.__dict__)
        fields["status"] = status
        fields["reason"] = reason
        fields["sent_at"] = sent_at
        fields["due_at"] = due_at
        fields["reported_status"] = reported_status
        return changed

    def to_dict(self) -> dict:
        """The outbox's record: the public fields, then the bookkeeping ones."""
        data = self.public_dict()
        data["rule_index"] = self.rule_index
        data["reported_status"] = str(self.reported_status) if self.reported_status is not None else None
        data["reported"] = self.reported_status is not None  # the store's flag
        return data

    @classmethod
    def from_dict(cls, data: dict, tz) -> "Action":
        late = data.get("late_seconds")
        return cls(
            key=data["key"], rule=data["rule"], customer_id=data["customer_id"], kind=data["kind"],
            to=data["to"], due_at=parse_timestamp(data["due_at"], tz), rule_index=data.get("rule_index", 0),
            trigger=data.get("trigger"), channel=data.get("channel"), address=data.get("address"),
            message_kind=data.get("message_kind"), message=data.get("message"), status=Status(data["status"]),
            reason=data.get("reason"),
            sent_at=parse_timestamp(data["sent_at"], tz) if data.get("sent_at") else None,
            step=data.get("step"), late_by=timedelta(seconds=late) if late is not None else None,
            defers=data.get("defers", 0),
            reported_status=Status(data["reported_status"]) if data.get("reported_status") else None,
        )

    def public_dict(self) -> dict:
        """The --out record (the fields of docs/rules.md's `replay` output), without bookkeeping fields."""
        due_at = isoformat(self.due_at)
        return {
            "key": self.key,
            "rule": self.rule,
            "customer_id": self.customer_id,
            "kind": self.kind,
            "channel": self.channel,
            "to": self.to,
            "address": self.address,
            "due_at": due_at,
            "sent_at": due_at if self.sent_at is self.due_at else isoformat(self.sent_at),
            "status": str(self.status),  # plain text, whatever the encoder
            "reason": self.reason,
            "message": self.message,
            "message_kind": self.message_kind,
            "trigger": self.trigger,
            "step": self.step,
            "late_by": format_duration(self.late_by) if self.late_by is not None else None,
            "late_seconds": int(self.late_by.total_seconds()) if self.late_by is not None else None,
            "defers": self.defers,
        }
