"""A recording channel: every action the engine reports, kept in order for assertions."""
from __future__ import annotations


class RecordingChannel:
    """Collects reported actions as the dicts `replay --out` writes (one per status reached)."""

    def __init__(self) -> None:
        self.actions: list[dict] = []

    def record(self, action) -> None:
        self.actions.append(action.public_dict())

    def clear(self) -> None:
        self.actions.clear()

    def sent(self, *, to: str | None = None, kind: str | None = None) -> list[dict]:
        """Messages that went out (notify/escalate with status sent), optionally by recipient/kind."""
        return [
            a for a in self.actions
            if a["status"] == "sent" and a["kind"] in ("notify", "escalate")
            and (to is None or a["to"] == to) and (kind is None or a["message_kind"] == kind)
        ]

    def by_rule(self, rule_id: str) -> list[dict]:
        return [a for a in self.actions if a["rule"] == rule_id]

    def of(self, **match) -> list[dict]:
        """Actions whose fields equal every given value, e.g. `of(customer_id="c-1", status="sent")`."""
        return [a for a in self.actions if all(a.get(field) == value for field, value in match.items())]

    def messages(self, customer_id: str | None = None) -> list[dict]:
        """Every notify/escalate action (any status), optionally of one customer, in decision order."""
        return [
            a for a in self.actions
            if a["kind"] in ("notify", "escalate") and (customer_id is None or a["customer_id"] == customer_id)
        ]
