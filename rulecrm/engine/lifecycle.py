"""Lifecycle stages recomputed from facts, and the instant the next time-driven change happens."""
from __future__ import annotations

from datetime import datetime


def stage_at(profile, lifecycle, now: datetime) -> str:
    """The stage the facts give at `now`; a dormant customer who orders again is active again."""
    if profile.order_count == 0 or profile.last_order_at is None:
        return "new"
    idle = now - profile.last_order_at
    if idle >= lifecycle.churned_after:
        return "churned"
    if idle >= lifecycle.dormant_after:
        return "dormant"
    if profile.order_count >= lifecycle.mature_orders:
        return "mature"
    if profile.order_count >= lifecycle.growing_orders:
        return "growing"
    return "new"


def next_change(profile, lifecycle, now: datetime) -> datetime | None:
    """The exact instant after `now` at which the stage changes with no new event, if any."""
    if profile.order_count == 0 or profile.last_order_at is None:
        return None
    for threshold in (lifecycle.dormant_after, lifecycle.churned_after):
        instant = profile.last_order_at + threshold
        if instant > now:
            return instant
    return None
