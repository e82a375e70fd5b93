"""Per-day counts as Chart.js data: one dataset per series (a status, a rule, an event type)."""
from __future__ import annotations

import json

from markupsafe import Markup

# The statuses keep their colour from chart to chart; other series take the palette in order.
STATUS_COLOURS = {"sent": "#2e7d32", "queued": "#1565c0", "failed": "#ef6c00", "dead": "#c62828",
                  "suppressed": "#757575", "deferred": "#8e24aa"}
PALETTE = ("#1565c0", "#2e7d32", "#ef6c00", "#8e24aa", "#00838f", "#c62828", "#6d4c41", "#f9a825", "#3949ab",
           "#757575")


def chart_json(per_day: dict[str, dict[str, int]]) -> Markup:
    """{"labels": days, "datasets": [{"label", "data", "backgroundColor"}]} as JSON for a data attribute."""
    days = list(per_day)
    series = sorted({name for counts in per_day.values() for name in counts}, key=str)
    datasets = []
    for index, name in enumerate(series):
        colour = STATUS_COLOURS.get(name, PALETTE[index % len(PALETTE)])
        datasets.append({"label": str(name), "data": [per_day[day].get(name, 0) for day in days],
                         "backgroundColor": colour})
    # escaped for an HTML attribute: Markup keeps the templates' masking away from the numbers
    return Markup.escape(json.dumps({"labels": days, "datasets": datasets}, ensure_ascii=False))
