"""End to end: `rulecrm replay --dispatch` as a subprocess against the stand-in WeCom server on 127.0.0.1.

Each test writes a rules directory and an events file, runs the command line with the robot key and
the customer-contact secret in the subprocess environment, then compares what the stand-in received
with the `--out` lines.
"""
from __future__ import annotations

import json
import time

import pytest
from wecom_standin import CONTACT_SECRET, ROBOT_KEY, ROBOT_PER_MINUTE, StandIn, serve

from rulecrm.testing import replay_cli, write_events, write_rules
from rulecrm_wecom.protocol import FREQ_OUT_OF_LIMIT

pytestmark = pytest.mark.slow  # replays delivering to a stand-in server, waiting out rate limits

ROBOT_PATH = "/cgi-bin/webhook/send"
SECRETS = {"WECOM_ROBOT_KEY": ROBOT_KEY, "WECOM_SECRET": CONTACT_SECRET}


class AnsweringStandIn(StandIn):
    """The plugin's stand-in, also keeping the errcode of every robot answer it gave and when."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.robot_answers: list[int] = []
        self.robot_arrivals: list[float] = []  # monotonic seconds, as the stand-in's own window counts

    def _robot(self, key, body):
        arrived = time.monotonic()
        answer = super()._robot(key, body)
        self.robot_answers.append(answer["errcode"])
        self.robot_arrivals.append(arrived)
        return answer


@pytest.fixture
def standin():
    state = AnsweringStandIn(robot_keys={ROBOT_KEY}, secret=CONTACT_SECRET, customers={"wm-alice", "wm-bob"},
                             staff={"rep-li"})
    server, state.url = serve(state)
    yield state
    server.shutdown()
    server.server_close()








def replay_dispatch(tmp_path, rules, events, *, env=None, timeout=60):
    """The real command line with --dispatch and the WeCom secrets in its environment."""
    return replay_cli(rules, events, workdir=tmp_path, dispatch=True, env={**SECRETS, **(env or {})},
                      timeout=timeout)


def review(n, rating, text, customer="c-1"):
    minute, second = divmod(n, 60)
    return {"id": f"rv-{n}", "type": "review.created", "customer_id": customer,
            "at": f"2026-03-01T10:{minute:02d}:{second:02d}+08:00",
            "data": {"review_id": f"r{n}", "order_id": f"o{n}", "rating": rating, "text": text}}


def robot_contents(standin, key=ROBOT_KEY):
    return [body["text"]["content"] for body in standin.robot_messages[key]]


def assert_no_secret(done, tmp_path, *secrets):
    shown = done.stdout + done.stderr + (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    for secret in secrets or (ROBOT_KEY, CONTACT_SECRET):
        assert secret not in shown


ROBOT_RULES = """
    shop: {timezone: Asia/Shanghai}
    channels:
      robot: {type: wecom-robot, key_env: WECOM_ROBOT_KEY, base_url: "%(url)s"}
    contacts:
      cs: {channel: robot, address: 客服群}
    rules:
      - id: bad-review
        on: review.created
        when: event.rating <= 2
        notify: {to: cs, kind: service, template: "差评 {event.rating}★: {event.text}"}
"""


def test_n_bad_reviews_become_n_robot_posts_with_the_expected_text(tmp_path, standin):
    rules = write_rules(tmp_path, ROBOT_RULES % {"url": standin.url})
    texts = ["茶叶受潮", "包装破损", "发错货", "物流太慢"]
    events = [review(i, 1 + i % 2, text) for i, text in enumerate(texts)] + [review(9, 5, "很好喝")]
    done, actions = replay_dispatch(tmp_path, rules, write_events(tmp_path, events))
    assert done.returncode == 0, done.stderr
    expected = [f"差评 {1 + i % 2}★: {text}" for i, text in enumerate(texts)]
    assert robot_contents(standin) == expected
    assert len(standin.requests_to(ROBOT_PATH)) == len(texts)
    assert all(r["query"] == {"key": ROBOT_KEY} for r in standin.requests_to(ROBOT_PATH))
    assert "客服群" not in json.dumps(standin.received, ensure_ascii=False)  # the address is only a label
    notified = [a for a in actions if a["kind"] == "notify"]
    assert sorted(a["message"] for a in notified) == sorted(expected)
    assert all((a["status"], a["channel"], a["to"], a["attempts"]) == ("sent", "robot", "cs", 1) for a in notified)
    assert_no_secret(done, tmp_path)


def test_errcode_minus_1_system_busy_is_retried_and_delivered(tmp_path, standin):
    standin.fail_next(1, errcode=-1)
    rules = write_rules(tmp_path, ROBOT_RULES % {"url": standin.url})
    started = time.monotonic()
    done, actions = replay_dispatch(tmp_path, rules, write_events(tmp_path, [review(1, 1, "茶叶受潮")]))
    assert done.returncode == 0, done.stderr
    [action] = [a for a in actions if a["kind"] == "notify"]
    assert (action["status"], action["attempts"], action["error"]) == ("sent", 2, None)
    assert len(standin.requests_to(ROBOT_PATH)) == 2
    assert robot_contents(standin) == ["差评 1★: 茶叶受潮"]
    assert time.monotonic() - started < 30


def test_an_invalid_robot_key_is_dead_exit_4_and_the_key_is_never_shown(tmp_path, standin):
    wrong_key = "0000-not-the-robot-key-0000"
    rules = write_rules(tmp_path, ROBOT_RULES % {"url": standin.url})
    done, actions = replay_dispatch(tmp_path, rules, write_events(tmp_path, [review(1, 1, "茶叶受潮")]),
                                    env={"WECOM_ROBOT_KEY": wrong_key})
    assert done.returncode == 4, done.stderr
    assert "1 action(s) not delivered" in done.stderr
    [action] = [a for a in actions if a["kind"] == "notify"]
    assert (action["status"], action["attempts"], action["code"]) == ("dead", 1, "93000")
    assert "invalid webhook url" in action["error"] and "[secret]" in action["error"]
    assert len(standin.requests_to(ROBOT_PATH)) == 1  # a permanent errcode is not retried
    assert standin.robot_messages == {}
    assert_no_secret(done, tmp_path, wrong_key, CONTACT_SECRET)


def test_a_text_over_2048_bytes_arrives_in_parts_of_at_most_2048_bytes(tmp_path, standin):
    long_text = "".join(f"第{i}点：茶叶受潮结块，冲泡后有霉味，希望尽快处理并给出补偿方案。\n" for i in range(60))
    assert len(f"差评 1★: {long_text}".encode()) > 2 * 2048
    rules = write_rules(tmp_path, ROBOT_RULES % {"url": standin.url})
    done, actions = replay_dispatch(tmp_path, rules, write_events(tmp_path, [review(1, 1, long_text)]))
    assert done.returncode == 0, done.stderr
    [action] = [a for a in actions if a["kind"] == "notify"]
    assert (action["status"], action["attempts"]) == ("sent", 1)
    parts = robot_contents(standin)
    assert len(parts) >= 3
    assert all(len(part.encode("utf-8")) <= 2048 for part in parts)
    bodies = []
    for index, part in enumerate(parts, 1):
        marker = f"({index}/{len(parts)})\n"
        assert part.startswith(marker)
        bodies.append(part[len(marker):])
    assert "".join(bodies) == action["message"] == f"差评 1★: {long_text}"
    assert standin.robot_answers == [0] * len(parts)


def test_21_robot_messages_wait_for_the_rate_limit_and_all_arrive(tmp_path, standin):
    """The only slow test here: the 21st post must wait for the robot's minute (about 60 s)."""
    count = ROBOT_PER_MINUTE + 1
    rules = write_rules(tmp_path, ROBOT_RULES % {"url": standin.url})
    events = [review(i, 1, f"第{i}条差评") for i in range(count)]
    started = time.monotonic()
    done, actions = replay_dispatch(tmp_path, rules, write_events(tmp_path, events), timeout=200)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert sorted(robot_contents(standin)) == sorted(f"差评 1★: 第{i}条差评" for i in range(count))
    notified = [a for a in actions if a["kind"] == "notify"]
    assert len(notified) == count and all(a["status"] == "sent" for a in notified)
    assert elapsed >= 59  # the dispatcher waited for a token instead of posting all 21 at once
    # docs/running.md: the dispatcher waits rather than exceed the limit, "the provider's own minute is
    # never overrun": the stand-in, counting posts as they arrive, must never have answered 45009.
    first = standin.robot_arrivals[0]
    offsets = [round(t - first, 4) for t in standin.robot_arrivals]
    assert FREQ_OUT_OF_LIMIT not in standin.robot_answers, (
        f"the stand-in answered 45009; answers {standin.robot_answers}, arrivals (s after the first) {offsets}")
    assert len(standin.requests_to(ROBOT_PATH)) == count
    assert all(a["attempts"] == 1 for a in notified)


def test_wecom_contact_as_preferred_channel_gets_tags_and_customer_notifications(tmp_path, standin):
    rules = write_rules(tmp_path, f"""
        shop: {{timezone: Asia/Shanghai}}
        channels:
          wx: {{type: wecom-contact, corp_id: corp-1, secret_env: WECOM_SECRET, sender: rep-li,
               base_url: "{standin.url}"}}
        rules:
          - id: tea-lover
            when: customer.category["tea"].order_count >= 1
            tag: 茶客
          - id: thanks
            on: order.placed
            notify: {{to: customer, kind: service, template: "{{customer.name}}，感谢购买 {{event.sku}}！"}}
    """)
    events = [
        {"id": "u-1", "type": "customer.upserted", "customer_id": "c-1", "at": "2026-03-01T09:00:00+08:00",
         "data": {"name": "林女士", "channel": "wx", "wecom_id": "wm-alice"}},
        {"id": "o-1", "type": "order.placed", "customer_id": "c-1", "at": "2026-03-01T10:00:00+08:00",
         "data": {"order_id": "o-1", "sku": "tea-xqg", "category": "tea", "amount": 128.0}},
    ]
    done, actions = replay_dispatch(tmp_path, rules, write_events(tmp_path, events))
    assert done.returncode == 0, done.stderr

    [tag] = [a for a in actions if a["kind"] == "tag"]
    assert (tag["status"], tag["channel"], tag["address"], tag["to"]) == ("sent", "wx", "wm-alice", "茶客")
    [mark] = standin.marks
    assert (mark["userid"], mark["external_userid"], mark.get("remove_tag") or []) == ("rep-li", "wm-alice", [])
    assert [standin.tag_name(tag_id) for tag_id in mark["add_tag"]] == ["茶客"]
    assert any(g["group_name"] == "rulecrm" and [t["name"] for t in g["tag"]] == ["茶客"] for g in standin.tag_groups)

    [notify] = [a for a in actions if a["kind"] == "notify"]
    assert (notify["status"], notify["channel"], notify["address"]) == ("sent", "wx", "wm-alice")
    [task] = standin.tasks
    assert task == {"chat_type": "single", "external_userid": ["wm-alice"], "sender": "rep-li",
                    "text": {"content": "林女士，感谢购买 tea-xqg！"}}
    assert all(r["query"].get("corpsecret") in (None, CONTACT_SECRET) for r in standin.received)
    assert_no_secret(done, tmp_path)
