"""`rulecrm init` points editors at the rule-file schema: the first line of every rule file it writes
names rulecrm.schema.json, written beside them as `rulecrm schema` prints it."""
from __future__ import annotations

from importlib.resources import files

from click.testing import CliRunner

from rulecrm import plugins
from rulecrm.cli import CliContext, main
from rulecrm.cli.init import MODELINE, SCHEMA_FILE
from rulecrm.rulefile.loader import check_rules


def run(*args):
    context = CliContext(manager=plugins.build_plugin_manager())
    return CliRunner().invoke(main, list(map(str, args)), obj=context)


def test_each_rule_file_starts_with_the_modeline_then_the_starter(tmp_path):
    made = run("init", tmp_path / "shop")
    assert made.exit_code == 0, made.output
    rules = tmp_path / "shop" / "rules"
    starter = {item.name: item.read_text(encoding="utf-8") for item in files("rulecrm.starter").iterdir()
               if item.name.endswith(".yaml")}
    written = {path.name: path.read_text(encoding="utf-8") for path in rules.glob("*.yaml")}
    assert MODELINE == "# yaml-language-server: $schema=rulecrm.schema.json\n"
    assert written == {name: MODELINE + text for name, text in starter.items()}
    assert sorted(path.name for path in rules.iterdir()) == sorted([*starter, SCHEMA_FILE])


def test_the_schema_beside_them_is_what_rulecrm_schema_prints(tmp_path):
    run("init", tmp_path / "shop")
    printed = run("schema")
    assert printed.exit_code == 0
    assert (tmp_path / "shop" / "rules" / SCHEMA_FILE).read_text(encoding="utf-8") == printed.output


def test_the_rules_still_check_and_the_schema_is_no_rule_file(tmp_path):
    run("init", tmp_path / "shop")
    ruleset, diagnostics = check_rules(tmp_path / "shop" / "rules",
                                       channel_types=plugins.check_channel_info(plugins.build_plugin_manager()))
    assert ruleset is not None, [d.format() for d in diagnostics]
    assert all(file.endswith(".yaml") for file in ruleset.files)


def test_a_second_init_writes_nothing(tmp_path):
    run("init", tmp_path / "shop")
    schema = tmp_path / "shop" / "rules" / SCHEMA_FILE
    schema.write_text("{}", encoding="utf-8")
    again = run("init", tmp_path / "shop")
    assert again.exit_code == 1 and "already has files" in again.output
    assert schema.read_text(encoding="utf-8") == "{}"
