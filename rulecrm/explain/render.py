"""The explanation as text for people (`rulecrm explain`) or as one JSON document (`--json`)."""
from __future__ import annotations

import json

INDENT = "  "


def render_json(report: dict) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2)


def render_text(report: dict) -> str:
    lines = [f"customer {report['customer']}  (state as of {report['now']}, shop time {report['shop_timezone']})", ""]
    lines += _profile(report["profile"])
    for rule in report["rules"]:
        lines.append("")
        lines += _rule(rule)
    lines.append("")
    lines.append("pending timers" + ("" if report["timers"] else ": none"))
    lines += [INDENT + _timer(timer) for timer in report["timers"]]
    return "\n".join(lines)


def _profile(profile: dict) -> list[str]:
    lines = ["profile"]
    skip = ("read_by_rules", "stage_history")
    width = max(len(key) for key in profile if key not in skip)
    for key, value in profile.items():
        if key not in skip:
            lines.append(f"{INDENT}{key.ljust(width)}  {_value(value)}")
    for change in profile["stage_history"]:
        lines.append(f"{INDENT}{'stage change'.ljust(width)}  {change['change']} at {change['at']}")
    if profile["read_by_rules"]:
        lines.append(f"{INDENT}read by the rules:")
        lines += [f"{INDENT * 2}{name} = {_value(value)}" for name, value in profile["read_by_rules"].items()]
    return lines


def _rule(rule: dict) -> list[str]:
    lines = [f"rule {rule['id']}  ({rule['source']})" + ("" if rule["enabled"] else "  [disabled]")]
    if rule["description"]:
        lines.append(INDENT + rule["description"])
    lines.append(f"{INDENT}{rule['trigger']}; does: {rule['does']}")
    lines += _condition(rule["condition"])
    if rule["actions"]:
        lines.append(f"{INDENT}actions:")
        for action in rule["actions"]:
            lines += _action(action)
    if rule["timers"]:
        lines.append(f"{INDENT}pending:")
        lines += [INDENT * 2 + _timer(timer) for timer in rule["timers"]]
    lines.append(f"{INDENT}verdict: {rule['verdict']}")
    return lines


def _condition(condition: dict | None) -> list[str]:
    if condition is None:
        return []
    against = condition["against"]
    if against is None:
        return [f"{INDENT}when {condition['expr'] or 'true'}: {condition['why']}"]
    where = "the profile now" if against["what"] != "event" else f"{against['type']} {against['id']} at {against['at']}"
    outcome = "true" if condition["result"] else "false"
    lines = [f"{INDENT}when {condition['expr'] or 'true (no condition)'}  on {where}: {outcome}"]
    if "trace" in condition:
        lines += _trace(condition["trace"], 2)
    if "delay" in condition:
        lines.append(f"{INDENT * 2}after = {_value(condition['delay'])}")
    return lines


def _trace(node: dict, depth: int) -> list[str]:
    lines = [f"{INDENT * depth}{node['expr']} = {node['shown']}"]
    for part in node.get("parts", ()):
        if part["expr"] != part["shown"]:  # a literal shows its own value: skip it
            lines += _trace(part, depth + 1)
    return lines


def _action(action: dict) -> list[str]:
    status = action["status"] + (f" ({action['reason']})" if action["reason"] else "")
    step = f" step {action['step']}" if action["step"] else ""
    head = f"{INDENT * 2}{action['kind']}{step} to {action['to']}: {status}; due {action['due_at']}"
    if action["sent_at"]:
        head += f", sent {action['sent_at']}"
    lines = [head, f"{INDENT * 3}key {action['key']}" + (f", via {action['channel']}" if action["channel"] else "")]
    lines += [INDENT * 3 + _gate(gate) for gate in action["gates"]
              if gate["gate"] != "passed" or len(action["gates"]) > 1]
    return lines


def _gate(gate: dict) -> str:
    kind = gate["gate"]
    if kind == "passed":
        return f"passed every gate at {gate['at']}"
    if kind == "opt-out":
        return f"opt-out: the customer opted out at {gate['opted_out_at']} ({gate['event']}); suppressed"
    if kind == "note":
        return f"note: {gate['detail']}"
    if kind == "no-address":
        return f"no-address: {gate['detail']}"
    if kind == "quiet-hours":
        pending = " (still held)" if gate.get("pending") else ""
        return (f"quiet hours {gate['window']} {gate['zone']}: local time {gate['local_time']}; "
                f"held until {gate['release_at']}{pending}")
    counted = "; ".join(f"{send['at']} by {send['by']}" for send in gate["counted"]) or "none"
    text = (f"cap {gate['cap']} ({gate['window']}, max {gate['max']}) at {gate['at']}: "
            f"counted {gate['count']}: {counted}; ")
    if gate["outcome"] == "deferred":
        pending = " (still held)" if gate.get("pending") else ""
        return text + f"deferred (#{gate['defer']}) to {gate['release_at']}{pending}"
    return text + "suppressed" + (f"; {gate['note']}" if gate.get("note") else "")


def _timer(timer: dict) -> str:
    what = timer["kind"] + (f" {timer['step']}" if timer.get("step") else "")
    text = f"{timer['due_at']}  {what}  rule {timer['rule']}"
    if timer.get("becomes"):
        text += f": becomes {timer['becomes']}"
    if timer.get("action"):
        text += f": releases {timer['action']} ({timer['reason']})"
    if timer.get("trigger"):
        trigger = timer["trigger"]
        text += f"  (trigger {trigger['type']} {trigger['id']} at {trigger['at']})"
    if timer.get("unless"):
        text += f"  unless {timer['unless']}"
    return text


def _value(value) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
