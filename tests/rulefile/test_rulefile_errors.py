"""Bad rule files: every problem at its exact file:line:column, with expected/found and a hint."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rulecrm.rulefile.loader import check_rules

RULEFILES = Path(__file__).parent / "rulefiles"


def check_text(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return check_rules(path)


def test_a_file_reports_all_its_errors_at_once():
    path = RULEFILES / "bad" / "many_errors.yaml"
    ruleset, diagnostics = check_rules(path)
    assert ruleset is None
    found = [(d.line, d.column, d.severity) for d in diagnostics]
    assert found == [
        (2, 13, "error"), (3, 16, "error"), (4, 3, "error"),
        (7, 27, "error"), (7, 49, "error"), (8, 11, "error"), (8, 27, "error"),
        (11, 17, "warning"), (11, 30, "error"), (12, 22, "error"),
        (15, 17, "error"),
        (18, 25, "error"), (18, 43, "warning"), (19, 32, "error"),
        (23, 9, "error"), (25, 18, "error"), (25, 28, "error"), (26, 5, "error"),
        (28, 9, "error"), (30, 12, "error"),
        (32, 5, "error"), (34, 5, "error"),
    ]
    assert all(d.path == str(path) for d in diagnostics)
    hints = {(d.line, d.column): d.hint for d in diagnostics}
    assert hints[(2, 13)] == "did you mean 'Asia/Shanghai'?"
    assert hints[(4, 3)] == "did you mean 'quiet_kinds'?"
    assert hints[(12, 22)] == "did you mean 'path'?"
    assert hints[(15, 17)] == "did you mean 'robot'?"
    assert hints[(18, 25)] == "did you mean 'marketing'?"
    assert hints[(23, 9)] == "did you mean 'review.created'?"
    assert hints[(25, 28)] == "did you mean 'service'?"
    assert hints[(26, 5)] == "did you mean 'escalate'?"
    assert "use `<name>_env`" not in hints[(11, 30)] and "key_env" in hints[(11, 30)]
    formatted = diagnostics[0].format()
    assert formatted.startswith(f"{path}:2:13: error: unknown time zone 'Asia/Shanghia'")


CASES = [
    # (rule-file text, line, column, severity, words in the message, hint or None)
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            tag: x
            notfy: {to: customer, template: hi}
        """, 5, 5, "error", "unknown key 'notfy' in rule", "did you mean 'notify'?", id="unknown-rule-key"),
    pytest.param(
        """\
        rules:
          - id: r
            tag: x
            tag: y
        """, 4, 5, "error", "duplicate key 'tag'", "keep only one of them", id="duplicate-key"),
    pytest.param(
        """\
        shopp: {timezone: UTC}
        """, 1, 1, "error", "unknown section 'shopp'", "did you mean 'shop'?", id="unknown-section"),
    pytest.param(
        """\
        rules:
          - id: r
            on: review.creatd
            tag: x
        """, 3, 9, "error", "unknown event type 'review.creatd'", "did you mean 'review.created'?",
        id="misspelled-event-type"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            after: 3d
            unless: "oder.placed same sku"
            tag: x
        """, 5, 14, "error", "unknown event type 'oder.placed'", "did you mean 'order.placed'?",
        id="misspelled-unless-type"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            after: 3d
            unless: order.placed same skuu
            tag: x
        """, 5, 31, "warning", "has no field 'skuu'", "did you mean 'sku'?", id="unless-unknown-field"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            after: 3d
            unless: order.placed by sku
            tag: x
        """, 5, 13, "error", "cannot read `unless: order.placed by sku`", None, id="unless-syntax"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            unless: order.placed
            tag: x
        """, 4, 5, "error", "`unless` needs `after` or `escalate`", None, id="unless-without-after"),
    pytest.param(
        """\
        rules:
          - id: r
            after: 3d
            tag: x
        """, 3, 5, "error", "`after` needs `on`", None, id="after-without-on"),
    pytest.param(
        """\
        rules:
          - id: r
            on: review.created
            after: 3d
            escalate: {steps: [{after: 1h, notify: {to: owner, template: hi}}]}
        """, 5, 5, "error", "both `after` and `escalate`", None, id="after-and-escalate"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            untag: true
            notify: {to: owner, template: hi}
        """, 4, 5, "error", "`untag` needs `tag`", None, id="untag-without-tag"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            at: "09:00"
            tag: x
        """, 4, 5, "error", "`at` is only for birthday rules", None, id="at-not-birthday"),
    pytest.param(
        """\
        rules:
          - id: r
            on: birthday
            at: "9 am"
            tag: x
        """, 4, 9, "error", "`at` must be a time of day", None, id="bad-at"),
    pytest.param(
        """\
        rules:
          - id: r
            when: customer.order_count > 1
        """, 2, 5, "error", "this rule does nothing", None, id="no-action"),
    pytest.param(
        """\
        rules:
          - id: r
            when: "customer.order_count >"
            tag: x
        """, 3, 34, "error", "expected an expression", None, id="expression-syntax-inside-quotes"),
    pytest.param(
        """\
        rules:
          - id: r
            on: review.created
            when: event.ratng <= 2
            tag: x
        """, 4, 11, "error", "ratng", "did you mean 'rating'?", id="expression-field"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            when: event.sku == "tea-xgq"
            tag: x
        products:
          - {sku: tea-xqg}
        """, 4, 24, None, "tea-xgq", "did you mean 'tea-xqg'?", id="expression-sku"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            notify: {to: customer, template: "hi {customer.nmae}"}
        """, 4, 43, "error", "nmae", "did you mean 'name'?", id="template-field"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            notify: {to: customer, template: "hi {customer.name"}
        """, 4, 42, "error", "unclosed", None, id="template-unclosed"),
    pytest.param(
        """\
        contacts:
          cs: {channel: console}
        rules:
          - id: r
            on: order.placed
            notify: {to: cx, template: hi}
        """, 6, 18, "error", "unknown recipient 'cx'", "did you mean 'cs'?", id="unknown-contact"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            notify: {to: owner, channel: consle, template: hi}
        """, 4, 34, "error", "unknown channel 'consle'", "did you mean 'console'?", id="unknown-channel"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            notify: {to: owner, kind: promo, template: hi}
        """, 4, 31, "error", "unknown kind 'promo'", None, id="unknown-kind"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            notify: {to: owner}
        """, 4, 13, "error", "needs `template`", None, id="notify-without-template"),
    pytest.param(
        """\
        rules:
          - id: r
            on: review.created
            escalate:
              steps:
                - {after: 1h, notify: {to: owner}}
        """, 6, 31, "error", "needs `template`", None, id="step-without-template"),
    pytest.param(
        """\
        rules:
          - id: r
            on: review.created
            escalate:
              steps: []
        """, 5, 14, "error", "at least one step", None, id="no-steps"),
    pytest.param(
        """\
        rules:
          - id: r
            on: review.created
            notify: {to: owner, template: hi}
            escalate:
              steps:
                - {after: 1d, notify: {to: owner}}
                - {after: 2h, notify: {to: owner}}
        """, 8, 19, "warning", "should wait longer", None, id="steps-not-increasing"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            after: 3
            tag: x
        """, 4, 12, "error", "", None, id="after-number"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            after: event.amount > 3
            tag: x
        """, 4, 12, "error", "", None, id="after-not-duration"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            after: 3d
            recheck: 3
            tag: x
        """, 5, 14, "error", "", None, id="recheck-not-bool"),
    pytest.param(
        """\
        rules:
          - id: Rule_1
            tag: x
        """, 2, 9, "error", "not a valid name", None, id="bad-rule-id"),
    pytest.param(
        """\
        rules:
          - {id: r, tag: x}
          - {id: r, tag: y}
        """, 3, 10, "error", "duplicate rule id 'r': already declared at", None, id="duplicate-rule-id"),
    pytest.param(
        """\
        rules:
          - tag: x
        """, 2, 5, "error", "rule needs `id`", None, id="rule-without-id"),
    pytest.param(
        """\
        rules:
          id: r
        """, 2, 3, "error", "`rules` must be a list", None, id="rules-not-list"),
    pytest.param(
        """\
        rules:
          - id: r
            tag: x
            enabled: "no"
        """, 4, 14, "error", "`enabled` must be true or false", None, id="enabled-string"),
    pytest.param(
        """\
        rules:
          - id: r
            tag: yes
        """, 3, 10, "error", "`tag` must be a string", 'quote it: "yes"', id="tag-boolean"),
    pytest.param(
        """\
        shop:
          timezone: asia/shanghai
        """, 2, 13, "error", "unknown time zone", "did you mean 'Asia/Shanghai'?", id="timezone-case"),
    pytest.param(
        """\
        shop:
          quiet_hours: "22:00 to 08:00"
        """, 2, 16, "error", "`quiet_hours` must be", None, id="quiet-hours-syntax"),
    pytest.param(
        """\
        shop:
          quiet_kinds: [marketing, servce]
        """, 2, 28, "error", "unknown kind 'servce'", "did you mean 'service'?", id="quiet-kinds"),
    pytest.param(
        """\
        shop: [UTC]
        """, 1, 7, "error", "`shop` must be a mapping", None, id="shop-list"),
    pytest.param(
        """\
        shop: {timezone: UTC}
        shop: {timezone: UTC}
        """, 2, 1, "error", "duplicate key 'shop'", None, id="shop-twice-in-file"),
    pytest.param(
        """\
        products:
          - {name: tea}
        """, 2, 5, "error", "product needs `sku`", None, id="product-without-sku"),
    pytest.param(
        """\
        products:
          - {sku: tea, cycle: 0d}
        """, 2, 23, "error", "`cycle` must be longer than zero", None, id="product-zero-cycle"),
    pytest.param(
        """\
        products:
          - {sku: tea, learn_cycle: "yes"}
        """, 2, 29, "error", "`learn_cycle` must be true or false", None, id="product-learn-cycle"),
    pytest.param(
        """\
        products:
          - {sku: tea, prise: 3}
        """, 2, 16, "error", "unknown key 'prise'", "did you mean 'price'?", id="product-unknown-key"),
    pytest.param(
        """\
        channels:
          Robot: {type: console}
        """, 2, 3, "error", "not a valid name", None, id="channel-name"),
    pytest.param(
        """\
        channels:
          hook: {type: webhok, url: "http://x"}
        """, 2, 16, "warning", "no installed plugin provides channel type 'webhok'", None, id="unknown-type"),
    pytest.param(
        """\
        channels:
          log: {type: jsnl}
        """, 2, 15, "warning", "no installed plugin provides", "did you mean 'jsonl'?", id="type-did-you-mean"),
    pytest.param(
        """\
        channels:
          hook: {type: webhook, api_token: abc}
        """, 2, 25, "error", "secret 'api_token' must not be written", None, id="inline-secret"),
    pytest.param(
        """\
        channels:
          out: {path: x.jsonl}
        """, 2, 8, "error", "needs `type`", None, id="channel-without-type"),
    pytest.param(
        """\
        channels:
          mem: {type: memory, path: x}
        """, 2, 23, "error", "unknown setting 'path' for channel type 'memory'", "'memory' takes no settings",
        id="setting-on-memory"),
    pytest.param(
        """\
        contacts:
          cs: {channel: console, adress: x}
        """, 2, 26, "error", "unknown key 'adress'", "did you mean 'address'?", id="contact-key"),
    pytest.param(
        """\
        channels:
          hook: {type: webhook}
        contacts:
          cs: {channel: hook}
        """, 4, 7, "error", "contact 'cs' needs `address`", None, id="contact-without-address"),
    pytest.param(
        """\
        contacts:
          owner: {channel: console}
        """, 2, 3, "error", "'owner' cannot be a contact name", None, id="reserved-contact"),
    pytest.param(
        """\
        caps:
          - {id: c, max: -1, per: 1d}
        """, 2, 18, "error", "`max` must be at least 0", None, id="cap-negative"),
    pytest.param(
        """\
        caps:
          - {id: c, max: "3", per: 1d}
        """, 2, 18, "error", "`max` must be an integer", None, id="cap-max-string"),
    pytest.param(
        """\
        caps:
          - {id: c, max: 3}
        """, 2, 5, "error", "cap needs `per`", None, id="cap-without-per"),
    pytest.param(
        """\
        caps:
          - {id: c, max: 3, per: 3d, window: calendar}
        """, 2, 26, "error", "a calendar window is a day, a week or a month", None, id="cap-calendar-per"),
    pytest.param(
        """\
        caps:
          - {id: c, max: 3, per: 0s}
        """, 2, 26, "error", "`per` must be longer than zero", None, id="cap-rolling-zero"),
    pytest.param(
        """\
        caps:
          - {id: c, max: 3, per: month}
        """, 2, 26, "error", "only for calendar windows", None, id="cap-rolling-month"),
    pytest.param(
        """\
        caps:
          - {id: c, max: 3, per: 1d, window: sliding}
        """, 2, 38, "error", "unknown window 'sliding'", None, id="cap-window"),
    pytest.param(
        """\
        caps:
          - {id: c, max: 3, per: 1d, on_cap: drop}
        """, 2, 38, "error", "unknown on_cap 'drop'", None, id="cap-on-cap"),
    pytest.param(
        """\
        caps:
          - {id: c, max: 3, per: 1d, channels: [sms]}
        """, 2, 41, "error", "unknown channel 'sms'", None, id="cap-channel"),
    pytest.param(
        """\
        lifecycle:
          growing_orders: 5
          mature_orders: 3
        """, 3, 18, "error", "`mature_orders` must be greater than `growing_orders`", None, id="lifecycle-orders"),
    pytest.param(
        """\
        lifecycle:
          churned_after: 30d
        """, 2, 18, "error", "`churned_after` must be greater than `dormant_after`", None,
        id="lifecycle-durations"),
    pytest.param(
        """\
        lifecycle:
          dormant_after: 90
        """, 2, 18, "error", "`dormant_after` must be a duration", "add a unit, e.g. 90d or 90h",
        id="lifecycle-number"),
    pytest.param(
        """\
        rules:
          - id: r
            on: order.placed
            after: cycle - 3d
            notify: {to: customer, template: hi}
        """, 4, 12, "warning", "`cycle` is used but no product declares a `cycle`", None, id="cycle-without-products"),
    pytest.param(
        """\
        - just a list
        """, 1, 1, "error", "a rule file is a mapping of sections", None, id="top-level-list"),
    pytest.param(
        """\
        rules:
          - id: r
            tag: [a
        """, 4, 1, "error", "invalid YAML", None, id="yaml-syntax"),
]


@pytest.mark.parametrize(("text", "line", "column", "severity", "words", "hint"), CASES)
def test_bad_rule_file(tmp_path, text, line, column, severity, words, hint):
    ruleset, diagnostics = check_text(tmp_path, text)
    here = [d for d in diagnostics if (d.line, d.column) == (line, column) and words in d.message]
    assert here, "\n".join(d.format() for d in diagnostics)
    problem = here[0]
    assert problem.path == str(tmp_path / "rules.yaml")
    if severity is not None:
        assert problem.severity == severity
    if severity == "error":
        assert ruleset is None
    if hint is not None:
        assert problem.hint == hint


def test_type_errors_name_the_yaml_types(tmp_path):
    _, diagnostics = check_text(tmp_path, """\
        rules:
          - id: r
            on: order.placed
            notify: [customer]
        caps:
          - {id: c, max: 1.5, per: 1d}
        """)
    notify, cap = [(d.expected, d.found) for d in diagnostics]
    assert notify == ("a mapping", "a list")
    assert cap == ("an integer >= 0", "number 1.5")


def test_a_disabled_rule_is_still_validated(tmp_path):
    _, diagnostics = check_text(tmp_path, """\
        rules:
          - id: r
            enabled: false
            on: order.placed
            when: event.amount + 1
            tag: x
        """)
    assert [(d.line, d.column, d.severity) for d in diagnostics] == [(5, 11, "error")]


def test_literal_when_values_are_read_from_their_text(tmp_path):
    ruleset, diagnostics = check_text(tmp_path, """\
        rules:
          - {id: always, when: true, tag: everyone}
          - {id: never, when: false, tag: no-one, untag: true}
        """)
    assert diagnostics == []
    assert [rule.when.value for rule in ruleset.rules] == [True, False]


def test_block_scalar_expressions_point_into_the_block(tmp_path):
    _, diagnostics = check_text(tmp_path, """\
        rules:
          - id: r
            on: order.placed
            when: |
              event.amount > 10 and
              event.colour == "red"
            tag: x
        """)
    assert [(d.line, d.column) for d in diagnostics] == [(6, 7)]
