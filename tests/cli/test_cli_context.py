"""The command line: one plugin manager per process on `ctx.obj`, built-in commands through the hook,
exit codes from the result objects."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter

import click
import pytest
from click.testing import CliRunner

from rulecrm import cli, plugins
from rulecrm.app.deadletters import RetryResult
from rulecrm.app.replay import ReplaySummary
from rulecrm.cli.check import CheckReport
from rulecrm.hookspecs import hookimpl


def counting_builds(monkeypatch):
    built = []
    real = plugins.build_plugin_manager

    def build(**kwargs):
        built.append(real(load_entry_points=False))
        return built[-1]

    monkeypatch.setattr(plugins, "build_plugin_manager", build)
    return built


def test_a_command_line_builds_one_plugin_manager(monkeypatch, tmp_path, capsys):
    built = counting_builds(monkeypatch)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["rulecrm", "check", str(rules)])
    with pytest.raises(SystemExit) as exit_info:
        cli.entry()
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert len(built) == 1


def test_without_entry_the_manager_is_built_on_first_use(monkeypatch):
    built = counting_builds(monkeypatch)
    result = CliRunner().invoke(cli.main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert "rulecrm.cli.builtin" in result.output
    assert len(built) == 1


def test_built_in_commands_are_a_plugin_of_the_same_hook():
    manager = plugins.build_plugin_manager(load_entry_points=False)
    assert manager.get_plugin("rulecrm.cli.builtin") is not None
    group = click.Group()
    manager.hook.rulecrm_register_commands(cli=group)
    assert set(group.commands) == {"check", "replay", "dead-letters", "init", "plugins", "test", "explain", "run",
                                   "schema", "diff", "serve"}
    blocked = plugins.build_plugin_manager(load_entry_points=False, blocked=["rulecrm.cli.builtin"])
    bare = click.Group()
    blocked.hook.rulecrm_register_commands(cli=bare)
    assert bare.commands == {}


class _MyCheck:
    @hookimpl
    def rulecrm_register_commands(self, cli):
        @cli.command("check")
        def check():
            click.echo("mine")


@pytest.mark.parametrize("deferring", [False, True], ids=["a click group", "rulecrm's group, which defers"])
def test_an_installed_plugin_may_replace_a_built_in_command(deferring):
    group = cli._RulecrmGroup() if deferring else click.Group()
    context = cli.CliContext(manager=plugins.build_plugin_manager(load_entry_points=False, extra=[_MyCheck()]))
    if not deferring:
        context.manager.hook.rulecrm_register_commands(cli=group)
    assert CliRunner().invoke(group, ["check"], obj=context).output == "mine\n"
    assert "replay" in group.list_commands(click.Context(group, obj=context))


def test_a_command_line_imports_only_the_command_it_runs(tmp_path):
    """rulecrm's group defers its built-in commands: `check` does not load the others' modules."""
    probe = (
        "import sys\n"
        "from rulecrm import cli\n"
        "sys.argv = ['rulecrm', 'check', sys.argv[1]]\n"
        "try:\n"
        "    cli.entry()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(name for name in sys.modules if name.startswith('rulecrm.cli.')))\n"
    )
    (tmp_path / "rules.yaml").write_text("rules:\n  - {id: vip, when: customer.order_count >= 2, tag: vip}\n",
                                         encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "rules.yaml")], capture_output=True,
                            text=True, timeout=120)
    loaded = result.stdout.strip().splitlines()[-1]
    assert "'rulecrm.cli.check'" in loaded, result.stdout + result.stderr
    assert not any(f"'rulecrm.cli.{name}'" in loaded for name in ("replay", "run", "serve", "test", "diff", "explain"))


def test_version_and_help_need_no_command():
    runner = CliRunner()
    assert runner.invoke(cli.main, ["--version"]).output.startswith("rulecrm, version ")
    helped = runner.invoke(cli.main, ["--help"])
    assert helped.exit_code == 0 and "dead-letters" in helped.output


@pytest.mark.parametrize("summary,code", [
    (ReplaySummary(), 0),
    (ReplaySummary(rejected=2), 3),
    (ReplaySummary(actions=Counter(sent=1, failed=1)), 4),
    (ReplaySummary(rejected=1, actions=Counter(dead=1)), 4),
])
def test_replay_summary_exit_code(summary, code):
    assert summary.exit_code == code


@pytest.mark.parametrize("result,code", [
    (RetryResult(applied=3), 0),
    (RetryResult(still_rejected=1), 3),
    (RetryResult(still_rejected=1, actions=Counter(failed=1)), 4),
    (RetryResult(actions=Counter(dead=2, sent=1)), 4),
])
def test_retry_result_exit_code(result, code):
    assert result.exit_code == code


class Finding:
    def __init__(self, is_error):
        self.is_error = is_error


def test_check_report_exit_code():
    assert CheckReport(()).exit_code == 0
    assert CheckReport((Finding(False),)).exit_code == 0
    report = CheckReport((Finding(True), Finding(False)))
    assert (report.errors, report.warnings, report.exit_code) == (1, 1, 1)


class BrokenCommands:
    @hookimpl
    def rulecrm_register_commands(self, cli):
        raise RuntimeError("cannot add my command")


class BrokenFunctions:
    @hookimpl
    def rulecrm_functions(self):
        raise RuntimeError("cannot list my functions")


@pytest.mark.parametrize("plugin, hook", [(BrokenCommands, "rulecrm_register_commands"),
                                          (BrokenFunctions, "rulecrm_functions")])
def test_a_failing_plugin_is_named_in_one_line_not_a_traceback(monkeypatch, tmp_path, capsys, plugin, hook):
    real = plugins.build_plugin_manager
    monkeypatch.setattr(plugins, "build_plugin_manager",
                        lambda **kwargs: real(load_entry_points=False, extra=[plugin()]))
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["rulecrm", "check", str(rules)])
    with pytest.raises(SystemExit) as exit_info:
        cli.entry()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert f"plugin 'test_cli_context.{plugin.__name__}' failed in {hook}: cannot" in err
    assert "Traceback" not in err


def test_replay_reads_the_rules_once(monkeypatch, tmp_path):
    loads = []
    real = plugins.load_rules_with

    def counting(manager, path):
        loads.append(path)
        return real(manager, path)

    monkeypatch.setattr(plugins, "load_rules_with", counting)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {id: hi, on: chat.received, tag: chatty}\n", encoding="utf-8")
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "chat.received", "customer_id": "c-1", "at": "2026-03-01T10:00:00Z"}\n',
                      encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["replay", "--rules", str(rules), "--events", str(events),
                                           "--until", "2026-03-02T00:00:00", "--backend", "python"])
    assert result.exit_code == 0, result.output
    assert '"to":"chatty"' in result.output
    assert loads == [str(rules)]
