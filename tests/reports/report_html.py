"""Reading a report page back (with the standard library's HTML parser) and the figures it must show,
computed here straight from the `--out` JSON lines of the same run."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path


class Page(HTMLParser):
    """Every element's tag and attributes, every script's text, and each table (by id) as rows of cell texts."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._script: tuple[dict, list[str]] | None = None
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "script":
            self._script = (attributes, [])
        elif tag == "table":
            self._table = attributes.get("id") or f"table-{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script[0], "".join(self._script[1])))
            self._script = None
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._script is not None:
            self._script[1].append(data)
        elif self._cell is not None:
            self._cell.append(data)

    @property
    def data(self) -> dict:
        """The figures: the JSON document of the page's <script type="application/json">."""
        blocks = [text for attributes, text in self.scripts if attributes.get("type") == "application/json"]
        assert len(blocks) == 1
        return json.loads(blocks[0])


def read_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def read_actions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def day(action: dict) -> str:
    return (action["sent_at"] or action["due_at"])[:10]


def daily(actions: list[dict]) -> Counter:
    """(rule, day, status) -> actions."""
    return Counter((a["rule"], day(a), a["status"]) for a in actions)


def shown_daily(figures: dict) -> Counter:
    return Counter({(row["rule"], row["day"], row["status"]): row["count"] for row in figures["daily"]})


def cap_counts(actions: list[dict]) -> Counter:
    """(cap, rule, day, status) -> actions a cap suppressed or still held."""
    return Counter((a["reason"].removeprefix("cap:"), a["rule"], day(a), a["status"]) for a in actions
                   if (a["reason"] or "").startswith("cap:") and a["status"] in ("suppressed", "deferred"))


def shown_caps(figures: dict) -> tuple[Counter, Counter, Counter]:
    """What the page shows of the caps: per (cap, status), per (cap, rule, status) and per (cap, day, status)."""
    totals, rules, days = Counter(), Counter(), Counter()
    for cap in figures["caps"]:
        for status in ("suppressed", "deferred"):
            totals[cap["cap"], status] += cap[status]
            for row in cap["rules"]:
                rules[cap["cap"], row["rule"], status] += row[status]
            for row in cap["days"]:
                days[cap["cap"], row["day"], status] += row[status]
    return +totals, +rules, +days


def expected_caps(actions: list[dict]) -> tuple[Counter, Counter, Counter]:
    totals, rules, days = Counter(), Counter(), Counter()
    for (cap, rule, when, status), n in cap_counts(actions).items():
        totals[cap, status] += n
        rules[cap, rule, status] += n
        days[cap, when, status] += n
    return totals, rules, days


def top_customers(actions: list[dict], n: int = 20) -> list[tuple[str, int]]:
    """The customers sent (or queued) the most messages addressed to them, most first, then by id."""
    counts = Counter(a["customer_id"] for a in actions
                     if a["kind"] in ("notify", "escalate") and a["to"] == "customer"
                     and a["status"] in ("sent", "queued"))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def shown_top_customers(figures: dict) -> list[tuple[str, int]]:
    return [(row["customer_id"], row["messages"]) for row in figures["top_customers"]]


def lateness_seconds(actions: list[dict]) -> list[int]:
    """Each escalation step's time from its trigger to when it went out (docs/cli.md)."""
    found = []
    for a in actions:
        if a["kind"] == "escalate" and a["late_seconds"] is not None and a["status"] in ("sent", "queued"):
            late = a["late_seconds"]
            if a["sent_at"]:
                late += max(0, int((datetime.fromisoformat(a["sent_at"])
                                    - datetime.fromisoformat(a["due_at"])).total_seconds()))
            found.append(late)
    return found
