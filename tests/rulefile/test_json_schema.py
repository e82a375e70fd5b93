"""The rule-file JSON Schema: every rule file the project ships passes it, it has exactly the keys the
loader takes, and it flags the mistakes it can see that `check` reports too."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from rulecrm import plugins
from rulecrm.cli import CliContext, main
from rulecrm.rulefile.caps import CAP_KEYS
from rulecrm.rulefile.channels import CONTACT_KEYS, GENERIC_SETTINGS, TYPE_KEY, looks_secret
from rulecrm.rulefile.declared import ChannelTypeInfo
from rulecrm.rulefile.json_schema import rule_file_schema, schema_text, secret_setting_pattern
from rulecrm.rulefile.loader import SECTIONS, check_rules, rule_files
from rulecrm.rulefile.rules import ESCALATE_KEYS, NOTIFY_KEYS, RULE_KEYS, STEP_KEYS
from rulecrm.rulefile.sections import LIFECYCLE_KEYS, PRODUCT_KEYS, SHOP_KEYS

REPO = Path(__file__).resolve().parents[2]
INSTALLED = plugins.check_channel_info(plugins.build_plugin_manager())
# Built in only, and with the installed plugins: a rule file valid for `check` passes either.
SCHEMAS = {"built-in": rule_file_schema(), "installed": rule_file_schema(INSTALLED)}


class EditorLoader(yaml.SafeLoader):
    """Reads YAML as editors do (YAML 1.2 core schema): PyYAML's safe loader reads YAML 1.1, where
    the key `on` is true and an unquoted 09:00 is the number 540."""


EditorLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
              r"|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
    ("merge", r"^(?:<<)$", ["<"]),
):
    EditorLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), _first)


def schema_errors(schema: dict, text: str) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"/{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for document in yaml.load_all(text, Loader=EditorLoader)
            for error in validator.iter_errors(document)]


def check_errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    _ruleset, diagnostics = check_rules(path, channel_types=INSTALLED)
    return [d.format() for d in diagnostics if d.is_error]


def shipped_rule_files() -> list[tuple[Path, Path]]:
    """(what `check` reads it with, the file) for every rule file of the rules directories under rules/,
    and of those the rule-file tests keep as valid."""
    kept = REPO / "tests" / "rulefile" / "rulefiles"
    directories = [*sorted(path for path in (REPO / "rules").iterdir() if path.is_dir()), kept / "good"]
    found = [(directory, Path(file)) for directory in directories for file in rule_files(directory)]
    return [*found, (kept / "spec_example.yaml", kept / "spec_example.yaml")]


RULE_FILES = shipped_rule_files()
DOC_EXAMPLES = [  # as tests/docs/test_docs.py reads them: every ```yaml block of docs/ is a rule file
    (f"{path.name}-{number}", block)
    for path in sorted((REPO / "docs").glob("*.md"))
    for number, block in enumerate(re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), re.S))
]


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
def test_the_schema_is_a_valid_draft_07_schema(schema_name):
    jsonschema.Draft7Validator.check_schema(SCHEMAS[schema_name])


def test_rulecrm_schema_prints_the_schema_of_the_installed_channel_types():
    result = CliRunner().invoke(main, ["schema"], obj=CliContext(manager=plugins.build_plugin_manager()))
    assert result.exit_code == 0, result.output
    assert result.output == schema_text(INSTALLED)
    assert json.loads(result.output)["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_the_shipped_rule_files_are_all_found():
    names = {path.relative_to(REPO).as_posix() for _, path in RULE_FILES}
    assert {"rules/tea-shop/30-reviews.yaml", "rules/cdnow/cdnow.yaml", "rules/reviews/reviews.yaml"} <= names
    assert len(DOC_EXAMPLES) >= 5


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
@pytest.mark.parametrize("checked,path", RULE_FILES, ids=[p.relative_to(REPO).as_posix() for _, p in RULE_FILES])
def test_every_shipped_rule_file_passes(checked, path, schema_name):
    _ruleset, diagnostics = check_rules(checked, channel_types=INSTALLED)
    assert [d.format() for d in diagnostics if d.is_error] == []  # valid for `check` ...
    assert schema_errors(SCHEMAS[schema_name], path.read_text(encoding="utf-8")) == []  # ... and for editors


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
@pytest.mark.parametrize("name,block", DOC_EXAMPLES, ids=[name for name, _ in DOC_EXAMPLES])
def test_every_rule_example_in_the_docs_passes(name, block, schema_name):
    assert schema_errors(SCHEMAS[schema_name], block) == []


def test_the_starter_passes_the_schema_init_writes_beside_it(tmp_path):
    result = CliRunner().invoke(main, ["init", str(tmp_path / "shop")],
                                obj=CliContext(manager=plugins.build_plugin_manager()))
    assert result.exit_code == 0, result.output
    files = rule_files(tmp_path / "shop" / "rules")
    assert len(files) == 5
    for file in map(Path, files):
        text = file.read_text(encoding="utf-8")
        reference = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", text.splitlines()[0])
        assert reference, f"{file.name} does not start with the modeline"
        schema = json.loads((file.parent / reference[1]).read_text(encoding="utf-8"))  # relative to the file
        assert schema == SCHEMAS["installed"]
        assert schema_errors(schema, text) == [], file.name


# (b) The schema names exactly the keys the loader takes, wherever it takes them.
OBJECTS = [
    ("rule file", (), SECTIONS),
    ("shop", ("properties", "shop"), SHOP_KEYS),
    ("lifecycle", ("properties", "lifecycle"), LIFECYCLE_KEYS),
    ("product", ("definitions", "product"), PRODUCT_KEYS),
    ("contact", ("definitions", "contact"), CONTACT_KEYS),
    ("cap", ("definitions", "cap"), CAP_KEYS),
    ("rule", ("definitions", "rule"), RULE_KEYS),
    ("notify", ("definitions", "notify"), NOTIFY_KEYS),
    ("step notify", ("definitions", "step_notify"), NOTIFY_KEYS),
    ("escalate", ("definitions", "escalate"), ESCALATE_KEYS),
    ("step", ("definitions", "step"), STEP_KEYS),
]


def at(schema: dict, path: tuple) -> dict:
    for part in path:
        schema = schema[part]
    return schema


@pytest.mark.parametrize("what,path,keys", OBJECTS, ids=[what for what, _, _ in OBJECTS])
def test_the_schema_has_exactly_the_loaders_keys(what, path, keys):
    node = at(SCHEMAS["installed"], path)
    assert list(node["properties"]) == list(keys)
    assert node["additionalProperties"] is False  # the loader refuses unknown keys: so do editors


def test_every_installed_channel_type_has_exactly_its_settings():
    channel = SCHEMAS["installed"]["definitions"]["channel"]
    assert set(channel["properties"]) == {TYPE_KEY, *GENERIC_SETTINGS}
    by_type = {rule["if"]["properties"][TYPE_KEY]["const"]: rule["then"] for rule in channel["allOf"]}
    assert set(by_type) == set(INSTALLED) >= {"console", "jsonl", "memory"}
    for name, info in INSTALLED.items():
        assert set(by_type[name]["properties"]) == set(info.settings), name
        assert all(setting["description"] for setting in by_type[name]["properties"].values())
    assert set(channel["properties"][TYPE_KEY]["anyOf"][0]["enum"]) == set(INSTALLED)


def test_every_key_has_a_description():
    def walk(node, where):
        if isinstance(node, dict):
            # the keys of a mapping (not the properties of `if`, `then` or `not`, which only constrain them)
            declared = node.get("properties", {}) if "object" in node.get("type", ()) else {}
            for key, value in declared.items():
                assert isinstance(value, dict) and value.get("description"), f"{where}/{key} has no description"
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(SCHEMAS["installed"], "")


# (c) Misspelled keys: `check` reports each as unknown, and the schema flags the same key.
MISSPELLED = [
    ("section", "rule", "rule:\n  - {id: a, tag: t}\n"),
    ("shop", "quiet_kind", "shop: {timezone: UTC, quiet_kind: [marketing]}\n"),
    ("product", "cylce", "products:\n  - {sku: tea, cylce: 30d}\n"),
    ("lifecycle", "dormant", "lifecycle: {dormant: 90d}\n"),
    ("cap", "maximum", "caps:\n  - {id: daily, per: 1d, maximum: 2}\n"),
    ("contact", "adress", "contacts:\n  cs: {channel: console, adress: desk}\n"),
    ("channel setting", "pth", "channels:\n  out: {type: jsonl, pth: out.jsonl}\n"),
    ("rule", "wehn", "rules:\n  - {id: a, tag: t, wehn: customer.order_count > 1}\n"),
    ("notify", "knd", "rules:\n  - {id: a, notify: {to: customer, template: hi, knd: service}}\n"),
    ("escalate", "unles", "rules:\n  - id: a\n    on: review.created\n    escalate:\n      unles: review.handled\n"
                          "      steps: [{after: 2h, notify: {to: customer, template: late}}]\n"),
    ("step", "notfy", "rules:\n  - id: a\n    on: review.created\n    notify: {to: customer, template: hi}\n"
                      "    escalate: {steps: [{after: 2h, notfy: {to: customer}}]}\n"),
]


@pytest.mark.parametrize("where,key,text", MISSPELLED, ids=[where for where, _, _ in MISSPELLED])
def test_a_misspelled_key_is_refused_by_both(tmp_path, where, key, text):
    assert any("unknown" in error and repr(key) in error for error in check_errors(tmp_path, text))
    for name, schema in SCHEMAS.items():
        assert any(repr(key) in error for error in schema_errors(schema, text)), name


# More of what the schema can see: `check` reports an error for each, and the schema flags it.
RULE = "rules:\n  - {id: a, %s}\n"
NOTIFY = "notify: {to: customer, template: hi}"
REFUSED = {
    "rule without id": "rules:\n  - {tag: t}\n",
    "rule id with capitals": RULE % "id: Bad_Id, tag: t",
    "rule that does nothing": RULE % "when: customer.order_count > 1",
    "after without on": RULE % f"after: 2h, {NOTIFY}",
    "after and escalate": RULE % f"on: review.created, after: 2h, {NOTIFY}, "
                                 "escalate: {steps: [{after: 2h, notify: {to: customer}}]}",
    "unless without a timer": RULE % f"on: order.placed, unless: order.placed, {NOTIFY}",
    "recheck without a timer": RULE % f"on: order.placed, recheck: 'true', {NOTIFY}",
    "untag without tag": RULE % f"untag: true, {NOTIFY}",
    "at outside birthdays": RULE % f"on: order.placed, at: '09:00', {NOTIFY}",
    "at that is no time": RULE % f"on: birthday, at: 9am, {NOTIFY}",
    "unless that is no event": RULE % f"on: order.placed, after: 2h, unless: order.placed when sku, {NOTIFY}",
    "notify without template": RULE % "notify: {to: customer}",
    "unknown kind": RULE % "notify: {to: customer, kind: promo, template: hi}",
    "escalation without steps": RULE % "on: review.created, escalate: {steps: []}",
    "enabled as text": RULE % f"enabled: 'no', {NOTIFY}",
    "quiet hours that are no window": "shop: {quiet_hours: 22-08}\n",
    "unknown quiet kind": "shop: {quiet_kinds: [promo]}\n",
    "cycle that is no duration": "products:\n  - {sku: tea, cycle: 30 days}\n",
    "learn_min_orders below 2": "products:\n  - {sku: tea, learn_min_orders: 1}\n",
    "negative price": "products:\n  - {sku: tea, price: -5}\n",
    "product without sku": "products:\n  - {name: tea}\n",
    "cap without per": "caps:\n  - {id: daily, max: 1}\n",
    "cap with no kinds": "caps:\n  - {id: daily, per: 1d, kinds: []}\n",
    "negative cap": "caps:\n  - {id: daily, per: 1d, max: -1}\n",
    "unknown window": "caps:\n  - {id: daily, per: 1d, window: monthly}\n",
    "unknown on_cap": "caps:\n  - {id: daily, per: 1d, on_cap: drop}\n",
    "calendar per that is no period": "caps:\n  - {id: daily, per: 2d, window: calendar}\n",
    "rolling per that is a period": "caps:\n  - {id: daily, per: week}\n",
    "lifecycle count of 0": "lifecycle: {growing_orders: 0}\n",
    "channel without type": "channels:\n  out: {path: out.jsonl}\n",
    "channel name with capitals": "channels:\n  Out: {type: jsonl}\n",
    "secret in a channel": "channels:\n  hook: {type: some-plugin, api_token: abc123}\n",
    "address_field that is no profile field": "channels:\n  sms: {type: some-plugin, address_field: mobile}\n",
    "contact named owner": "contacts:\n  owner: {channel: console}\n",
    "contact without channel": "contacts:\n  cs: {address: desk}\n",
    "a section that is a list": "shop: [UTC]\n",
}


@pytest.mark.parametrize("text", REFUSED.values(), ids=REFUSED.keys())
def test_what_the_schema_can_see_is_refused_by_both(tmp_path, text):
    assert check_errors(tmp_path, text) != []
    assert schema_errors(SCHEMAS["installed"], text) != []


GATEWAY = {"sms-gateway": ChannelTypeInfo("sms-gateway", frozenset({"url", "token_env", "sender"}),
                                          frozenset({"url", "token"}), setting_help=(("url", "where to POST"),))}


@pytest.mark.parametrize("settings,valid", [
    ("url: 'http://127.0.0.1:9', token_env: SMS_TOKEN", True),
    ("url_env: SMS_URL, token_env: SMS_TOKEN, sender: shop, address_field: phone", True),
    ("token_env: SMS_TOKEN", False),  # url is required
    ("url: 'http://127.0.0.1:9'", False),  # so is the token, through the environment only
    ("url: 'http://127.0.0.1:9', token_env: SMS_TOKEN, token: abc", False),
    ("url: 'http://127.0.0.1:9', token_env: SMS_TOKEN, sendr: shop", False),
])
def test_a_channel_types_settings_are_checked_alike(tmp_path, settings, valid):
    text = f"channels:\n  sms: {{type: sms-gateway, {settings}}}\n"
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    _ruleset, diagnostics = check_rules(path, channel_types=GATEWAY)
    assert ([d.format() for d in diagnostics if d.is_error] == []) is valid
    assert (schema_errors(rule_file_schema(GATEWAY), text) == []) is valid


def test_a_channel_type_no_plugin_provides_takes_any_setting(tmp_path):
    text = "channels:\n  sms: {type: some-plugin, url: 'http://127.0.0.1:8080', sender_env: SMS_SENDER}\n"
    assert check_errors(tmp_path, text) == []  # a warning only
    assert schema_errors(SCHEMAS["installed"], text) == []


def test_the_defaults_are_what_the_loader_uses(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("shop: {}\nlifecycle: {}\nproducts:\n  - {sku: tea}\ncaps:\n  - {id: daily, per: 1d}\n"
                    "rules:\n  - {id: a, tag: t}\n", encoding="utf-8")
    ruleset, diagnostics = check_rules(path)
    assert ruleset is not None, diagnostics
    schema = SCHEMAS["built-in"]
    defaults = {
        ("properties", "shop"): {"timezone": ruleset.shop.timezone_name,
                                 "quiet_kinds": sorted(ruleset.shop.quiet_kinds)},
        ("properties", "lifecycle"): {"growing_orders": ruleset.lifecycle.growing_orders,
                                      "mature_orders": ruleset.lifecycle.mature_orders,
                                      "dormant_after": "90d", "churned_after": "180d"},
        ("definitions", "product"): {"learn_cycle": ruleset.products[0].learn_cycle,
                                     "learn_min_orders": ruleset.products[0].learn_min_orders},
        ("definitions", "cap"): {"kinds": sorted(ruleset.caps[0].kinds), "max": ruleset.caps[0].max,
                                 "window": ruleset.caps[0].window, "on_cap": ruleset.caps[0].on_cap,
                                 "per_channel": ruleset.caps[0].per_channel},
        ("definitions", "rule"): {"enabled": ruleset.rules[0].enabled, "untag": ruleset.rules[0].untag},
    }
    for path_in_schema, expected in defaults.items():
        properties = at(schema, path_in_schema)["properties"]
        assert {key: value["default"] for key, value in properties.items() if "default" in value} == expected
    assert (ruleset.lifecycle.dormant_after.days, ruleset.lifecycle.churned_after.days) == (90, 180)


SECRET_LIKE = ["key", "api_key", "access_token", "smtp-password", "Api.Key", "PASSWD", "myToken", "client_secret",
               "keyword", "tokens", "password2", "monkey", "key_env", "address_field", "sender", "url"]


@pytest.mark.parametrize("name", SECRET_LIKE)
def test_the_secret_pattern_is_looks_secret(name):
    assert (re.search(secret_setting_pattern(), name) is not None) == looks_secret(name)


@given(st.text(alphabet="keyapisortnwdcKEYT_-.x2", max_size=16))
def test_the_secret_pattern_is_looks_secret_for_any_name(name):
    assert (re.search(secret_setting_pattern(), name) is not None) == looks_secret(name)
