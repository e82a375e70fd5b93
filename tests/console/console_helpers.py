"""What the console tests share: states replayed from the real CDNOW history and what they hold."""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from cdnow_head import CDNOW_RULES, write_cdnow_head

HEAD_LINES = 400  # purchases of CDNOW_master.txt: a state built in well under a second
TOKEN = "console-test-token-Kq93"
TOKEN_ENV = "RULECRM_TEST_CONSOLE_TOKEN"
CUSTOMER = "00001"
CUSTOMER_NAME = "王小明"
PHONE = "+8613812345678"
PHONE_MASKED = "+***5678"
EMAIL = "xiaoming@example.com"
EMAIL_MASKED = "x***@example.com"
# One malformed line: its customer (00002) exists, and the fix gives it a valid time.
BROKEN_EVENT_ID = "late-order-1"
BROKEN_LINE = json.dumps({"id": BROKEN_EVENT_ID, "type": "order.placed", "customer_id": "00002", "at": "not a time",
                          "data": {"order_id": BROKEN_EVENT_ID, "sku": "cd", "quantity": 2, "amount": 30.0}})
FIXED_LINE = BROKEN_LINE.replace('"not a time"', '"1997-03-01T00:00:00"')

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1280,1600")


def write_events(directory: Path) -> Path:
    """The head of CDNOW, a customer's personal details (to be masked) and one malformed line."""
    events = write_cdnow_head(directory / "events.jsonl", HEAD_LINES)
    with open(events, "a", encoding="utf-8") as out:
        out.write(json.dumps({"id": "profile-1", "type": "customer.upserted", "customer_id": CUSTOMER,
                              "at": "1997-01-02T00:00:00",
                              "data": {"name": CUSTOMER_NAME, "phone": PHONE, "email": EMAIL}}) + "\n")
        out.write(BROKEN_LINE + "\n")
    return events


def replayed_state(directory: Path, *, partitions: int | None = None) -> Path:
    """`rulecrm replay` of the events into a new state (a directory of shards with `partitions`), in process."""
    from click.testing import CliRunner

    from rulecrm.cli import main

    directory.mkdir(parents=True, exist_ok=True)
    events = write_events(directory)
    state = directory / ("state" if partitions else "state.db")
    extra = ("--partitions", str(partitions)) if partitions else ()
    done = CliRunner().invoke(main, ["replay", "--rules", str(CDNOW_RULES), "--events", str(events), "--state",
                                     str(state), "--out", os.devnull, "--no-progress", *extra])
    assert done.exit_code == 3, done.output  # 3: one line rejected, kept as a dead letter
    return state


def query(state: Path, sql: str, params=()) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        return db.execute(sql, params).fetchall()



def make_console(state: Path, *, token: str | None = TOKEN, rules: Path = CDNOW_RULES):
    from rulecrm.console.app import Console
    from rulecrm.console.security import Guard
    from rulecrm.plugins import build_plugin_manager

    return Console(rules_path=str(rules), state_path=str(state), manager=build_plugin_manager(), guard=Guard(token))
