"""Staff notifications (`to: owner`, contacts) never fall back to a customer's channel (docs/rules.md)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ev, of, run, write_events, write_rules

from rulecrm.rulefile.loader import check_rules
from rulecrm.testing import replay_cli

BACKENDS = pytest.mark.parametrize("backend", ["python", "durable"])

CUSTOMER_CHANNEL = """
shop: {timezone: UTC}
channels:
  wecom: {type: jsonl, path: customer-messages.jsonl}   # customer-facing
%(contacts)s
rules:
  - id: lead
    on: chat.received
    notify: {to: owner, kind: service, template: "internal: {customer.id} wants to buy"}
"""


def rules(contacts=""):
    return CUSTOMER_CHANNEL % {"contacts": contacts}


def upsert(customer, **data):
    return ev("customer.upserted", customer, "2026-03-01T09:00:00Z", id=f"u-{customer}", channel="wecom", **data)


def chat(customer):
    return ev("chat.received", customer, "2026-03-01T10:00:00Z", id=f"ch-{customer}", text="soon")


@BACKENDS
def test_an_owner_who_is_not_a_contact_is_not_reached_on_the_customers_channel(tmp_path, backend):
    actions, _ = run(tmp_path, rules(), [upsert("c1", owner="rep-li"), chat("c1")], backend=backend)
    [note] = of(actions, rule="lead")
    assert ((note["status"], note["reason"], note["channel"], note["address"])
            == ("suppressed", "no-address", None, None))


@BACKENDS
def test_a_customer_without_owner_is_suppressed_without_taking_the_customers_channel(tmp_path, backend):
    actions, _ = run(tmp_path, rules(), [upsert("c1"), chat("c1")], backend=backend)
    [note] = of(actions, rule="lead")
    assert (note["status"], note["reason"], note["channel"]) == ("suppressed", "no-address", None)


@BACKENDS
def test_an_owner_declared_as_contact_gets_the_contacts_channel(tmp_path, backend):
    contacts = "contacts:\n  rep-li: {channel: console, address: li.ming}"
    actions, _ = run(tmp_path, rules(contacts), [upsert("c1", owner="rep-li"), chat("c1")], backend=backend)
    [note] = of(actions, rule="lead")
    assert (note["status"], note["channel"], note["address"]) == ("sent", "console", "li.ming")


@BACKENDS
def test_a_staff_channel_named_by_the_rule_carries_the_owners_name_as_address(tmp_path, backend):
    text = rules().replace('template: "internal', 'channel: console, template: "internal')
    actions, _ = run(tmp_path, text, [upsert("c1", owner="rep-li"), chat("c1")], backend=backend)
    [note] = of(actions, rule="lead")
    assert (note["status"], note["channel"], note["address"]) == ("sent", "console", "rep-li")


ESCALATION = """
shop: {timezone: UTC}
channels:
  wecom: {type: jsonl, path: customer-messages.jsonl}
contacts:
  cs: {channel: console, address: cs-group}
rules:
  - id: sorry
    on: review.created
    notify: {to: customer, channel: wecom, kind: service, template: "sorry about order {event.order_id}"}
    escalate:
      steps:
        - {after: 1h, notify: {to: owner}}
        - {after: 2h, notify: {to: cs}}
        - {after: 3h, notify: {to: customer}}
"""


@BACKENDS
def test_a_staff_escalation_step_does_not_inherit_the_customer_channel(tmp_path, backend):
    events = [upsert("c1", owner="rep-li", wecom_id="wm-1"),
              ev("review.created", "c1", "2026-03-01T10:00:00Z", id="r1", review_id="r1", order_id="o1", rating=1)]
    actions, _ = run(tmp_path, ESCALATION, events, until="2026-03-02T00:00:00Z", backend=backend)
    by_step = {a["step"]: a for a in of(actions, rule="sorry")}
    assert (by_step[None]["channel"], by_step[None]["status"]) == ("wecom", "sent")
    assert (by_step[1]["status"], by_step[1]["reason"], by_step[1]["channel"]) == ("suppressed", "no-address", None)
    assert (by_step[2]["channel"], by_step[2]["address"], by_step[2]["status"]) == ("console", "cs-group", "sent")
    assert (by_step[3]["channel"], by_step[3]["status"]) == ("wecom", "sent")  # a customer step still inherits


# -- check ---------------------------------------------------------------------------------


def owner_warnings(tmp_path, text):
    path = write_rules(tmp_path, text)
    ruleset, diagnostics = check_rules(path)
    assert ruleset is not None, diagnostics
    return [(d.line, d.column) for d in diagnostics if "reaches no one" in d.message]


def test_check_warns_at_the_to_value_when_no_owner_routing_exists(tmp_path):
    text = """\
        rules:
          - id: lead
            on: chat.received
            notify: {to: owner, template: "hi"}
            escalate:
              steps:
                - after: 1h
                  notify:
                    to: owner
    """
    assert owner_warnings(tmp_path, text) == [(4, 18), (9, 17)]
    path = write_rules(tmp_path, text)
    [first] = [d for d in check_rules(path)[1] if (d.line, d.column) == (4, 18)]
    assert first.severity == "warning" and "no-address" in first.format()


def test_a_declared_contact_is_owner_routing(tmp_path):
    text = ("contacts:\n  rep-li: {channel: console, address: li}\n"
            + 'rules:\n  - id: lead\n    on: chat.received\n    notify: {to: owner, template: "hi"}\n')
    assert owner_warnings(tmp_path, text) == []


def test_a_channel_in_the_notify_is_owner_routing_and_steps_inherit_it(tmp_path):
    text = """\
        rules:
          - id: lead
            on: chat.received
            notify: {to: owner, channel: console, template: "hi"}
            escalate: {steps: [{after: 1h, notify: {to: owner}}]}
    """
    assert owner_warnings(tmp_path, text) == []


def test_a_contact_in_another_file_counts(tmp_path):
    write_rules(tmp_path, "contacts:\n  rep-li: {channel: console, address: li}\n", name="00-contacts.yaml")
    text = 'rules:\n  - id: lead\n    on: chat.received\n    notify: {to: owner, template: "hi"}\n'
    assert owner_warnings(tmp_path, text) == []


def test_the_starter_routes_its_owners(tmp_path):
    from importlib.resources import files

    starter = files("rulecrm.starter")
    for item in starter.iterdir():
        if item.name.endswith(".yaml"):
            (tmp_path / item.name).write_bytes(item.read_bytes())
    ruleset, diagnostics = check_rules(tmp_path)
    assert ruleset is not None and not [d for d in diagnostics if "reaches no one" in d.message]
    assert {"rep-li", "rep-zhao"} <= {c.name for c in ruleset.contacts}  # its events' owners


# -- end to end --------------------------------------------------------------------------


def test_replay_dispatch_never_puts_an_internal_note_on_the_customer_channel(tmp_path):
    rules_dir = write_rules(tmp_path, rules())
    events = write_events(tmp_path, [upsert("c1", owner="rep-li"), chat("c1"),
                                     ev("chat.received", "c1", "2026-03-01T11:00:00Z", id="ch-2", text="again")])
    done, actions = replay_cli(rules_dir, events, workdir=tmp_path, dispatch=True)
    assert done.returncode == 0, done.stderr
    notes = of(actions, rule="lead")
    assert [(a["status"], a["reason"], a["channel"]) for a in notes] == [("suppressed", "no-address", None)] * 2
    customer_file = tmp_path / "customer-messages.jsonl"
    assert not customer_file.exists() or "internal" not in customer_file.read_text(encoding="utf-8")
    checked = subprocess.run([sys.executable, "-m", "rulecrm", "check", str(rules_dir)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0
    assert "rules.yaml:9:" in checked.stdout and "reaches no one" in checked.stdout


def test_replay_dispatch_delivers_owner_notes_through_their_contact(tmp_path):
    contacts = "contacts:\n  rep-li: {channel: staff, address: li.ming}"
    text = rules(contacts).replace("channels:\n", "channels:\n  staff: {type: jsonl, path: staff-notes.jsonl}\n")
    rules_dir = write_rules(tmp_path, text)
    events = write_events(tmp_path, [upsert("c1", owner="rep-li"), chat("c1")])
    done, actions = replay_cli(rules_dir, events, workdir=tmp_path, dispatch=True)
    assert done.returncode == 0, done.stderr
    [note] = of(actions, rule="lead")
    assert (note["status"], note["channel"], note["address"]) == ("sent", "staff", "li.ming")
    [sent] = [json.loads(line) for line in (tmp_path / "staff-notes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sent["text"] == "internal: c1 wants to buy" and sent["address"] == "li.ming"
    assert not (tmp_path / "customer-messages.jsonl").exists()


def test_explain_says_why_an_owner_note_had_no_address(tmp_path):
    rules_dir = write_rules(tmp_path, rules())
    events = write_events(tmp_path, [upsert("c1", owner="rep-li"), chat("c1")])
    state = tmp_path / "state.db"
    done, _actions = replay_cli(rules_dir, events, workdir=tmp_path)
    assert done.returncode == 0, done.stderr
    explained = subprocess.run([sys.executable, "-m", "rulecrm", "explain", "--rules", str(rules_dir), "--state",
                                str(state), "--customer", "c1", "--rule", "lead", "--json"],
                               capture_output=True, text=True, timeout=60)
    assert explained.returncode == 0, explained.stderr
    [rule] = json.loads(explained.stdout)["rules"]
    [action] = rule["actions"]
    [gate] = action["gates"]
    assert (gate["gate"], gate["field"]) == ("no-address", "owner")
    assert gate["detail"] == "the owner 'rep-li' is not a declared contact and the rule names no channel"
