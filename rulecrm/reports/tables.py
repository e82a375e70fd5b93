"""The report's tables, side by side: each row has one cell per side (a replay has one side, a diff two,
old and new), so the numbers read without the charts' script."""
from __future__ import annotations

from collections.abc import Sequence

STATUS_ORDER = ("sent", "queued", "deferred", "suppressed", "failed", "dead")


def statuses(sides: Sequence[dict]) -> list[str]:
    """Every status of any side, the usual ones in STATUS_ORDER first."""
    found = {status for side in sides for status in side["figures"]["statuses"]}
    return [s for s in STATUS_ORDER if s in found] + sorted(found - set(STATUS_ORDER))


def rules(sides: Sequence[dict]) -> list[str]:
    """Every rule of any side, in the last side's order (the new rules of a diff), then the others'."""
    ordered: list[str] = []
    for side in reversed(sides):
        ordered.extend(rule for rule in side["figures"]["rules"] if rule not in ordered)
    return ordered


def daily_rows(sides: Sequence[dict], status_names: Sequence[str]) -> list[dict]:
    """One row per rule and day: `rule`, `day`, `cells` (per side, the counts in `status_names` order)."""
    counts: dict[tuple, list[dict]] = {}
    for n, side in enumerate(sides):
        for row in side["figures"]["daily"]:
            per_side = counts.setdefault((row["rule"], row["day"]), [{} for _ in sides])
            per_side[n][row["status"]] = row["count"]
    position = {rule: n for n, rule in enumerate(rules(sides))}
    return [{"rule": rule, "day": day, "cells": [[by_status.get(s, 0) for s in status_names] for by_status in cells]}
            for (rule, day), cells in sorted(counts.items(), key=lambda item: (position[item[0][0]], item[0][1]))]


def rule_totals(sides: Sequence[dict], status_names: Sequence[str]) -> list[dict]:
    """One row per rule: per side, its actions in each status over the whole history."""
    totals: dict[str, list[dict]] = {rule: [{} for _ in sides] for rule in rules(sides)}
    for n, side in enumerate(sides):
        for row in side["figures"]["daily"]:
            by_status = totals[row["rule"]][n]
            by_status[row["status"]] = by_status.get(row["status"], 0) + row["count"]
    return [{"rule": rule, "cells": [[by_status.get(s, 0) for s in status_names] for by_status in cells]}
            for rule, cells in totals.items()]


def cap_rows(sides: Sequence[dict], group: str | None = None) -> list[dict]:
    """Per cap (and per rule or day when `group` is `rules` or `days`): per side, (suppressed, deferred)."""
    found: dict[tuple, list[tuple[int, int]]] = {}
    order: list[tuple] = []
    for n, side in enumerate(sides):
        for cap in side["figures"]["caps"]:
            entries = [cap] if group is None else cap[group]
            for entry in entries:
                name = (cap["cap"],) if group is None else (cap["cap"], entry["rule" if group == "rules" else "day"])
                if name not in found:
                    found[name] = [(0, 0) for _ in sides]
                    order.append(name)
                found[name][n] = (entry["suppressed"], entry["deferred"])
    if group is not None:
        order.sort()
    return [{"name": name, "cells": found[name]} for name in order]


def lateness_rows(sides: Sequence[dict]) -> list[dict]:
    """Per histogram bucket: per side, the escalations in it (every side has the same buckets)."""
    buckets = sides[0]["figures"]["lateness"]["buckets"]
    return [{"label": bucket["label"], "cells": [side["figures"]["lateness"]["buckets"][n]["count"] for side in sides]}
            for n, bucket in enumerate(buckets)]
