"""Render a report's page: the template `report.html` with the figures, Chart.js and the page's script inline.

Nothing on the page is fetched: the chart library is copied into a <script> element, and the figures
are a JSON document in a <script type="application/json"> element, escaped so that no `</script>` or
`<!--` inside a value can end it (Jinja's `tojson`: `<`, `>`, `&` and `'` as `\\u` escapes).
"""
from __future__ import annotations

import re
from importlib import resources

import jinja2

from rulecrm.reports import tables
from rulecrm.reports.data import TOP_CUSTOMERS

CHART_JS = ("console", "static", "vendor", "chart.umd.min.js")  # vendored, inside the rulecrm package
_SCRIPT_END = re.compile(r"</(script)", re.IGNORECASE)


def render_page(*, title: str, details: list[tuple[str, str]], sides: list[dict], changes: dict | None = None) -> str:
    """The page. `details`: (label, value) lines of the header; `sides`: one `{"name", "figures"}` for a
    replay, two (old, new) for a diff; `changes`: a diff's per-rule counts (`diff --json`'s `rules`,
    `totals`, `rules_added`, `rules_removed`) or None."""
    status_names = tables.statuses(sides)
    template = _environment().from_string(_read("reports", "report.html"))
    return template.render(
        title=title, details=details, sides=sides, changes=changes, statuses=status_names,
        rule_totals=tables.rule_totals(sides, status_names), daily_rows=tables.daily_rows(sides, status_names),
        caps=tables.cap_rows(sides), cap_rules=tables.cap_rows(sides, "rules"), cap_days=tables.cap_rows(sides, "days"),
        lateness_rows=tables.lateness_rows(sides), top_n=TOP_CUSTOMERS,
        data={"sides": sides, "statuses": status_names, "rules": tables.rules(sides), "changes": changes},
        chart_js=inline_script(_read(*CHART_JS)),
    )


def inline_script(code: str) -> str:
    """`code` safe inside a <script> element: a `</script` in it (in a string) would end the element."""
    return _SCRIPT_END.sub(r"<\\/\1", code)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def _read(*parts: str) -> str:
    path = resources.files("rulecrm")
    for part in parts:  # one name at a time: Python 3.10's joinpath takes one
        path = path / part
    return path.read_text(encoding="utf-8")
