"""rulecrm's own commands, a plugin of `rulecrm_register_commands` like any installed one."""
from __future__ import annotations

from rulecrm.cli.deferred import add_command_deferred
from rulecrm.hookspecs import hookimpl

# Each built-in command by name: the module and attribute that define it. rulecrm's own group imports
# a command's module only when that command runs or is listed, so `rulecrm check` does not load the
# live runner, the console server or the test runner.
BUILTIN_COMMANDS = {
    "check": "rulecrm.cli.check:check_command",
    "replay": "rulecrm.cli.replay:replay_command",
    "dead-letters": "rulecrm.cli.dead_letters:dead_letters_command",
    "init": "rulecrm.cli.init:init_command",
    "plugins": "rulecrm.cli.plugins:plugins_command",
    "test": "rulecrm.cli.test:test_command",
    "explain": "rulecrm.cli.explain:explain_command",
    "run": "rulecrm.cli.run:run_command",
    "schema": "rulecrm.cli.schema:schema_command",
    "diff": "rulecrm.cli.diff:diff_command",
    "serve": "rulecrm.cli.serve:serve_command",
}


@hookimpl(tryfirst=True)  # first, so that an installed plugin may replace a built-in command
def rulecrm_register_commands(cli):
    for name, target in BUILTIN_COMMANDS.items():
        add_command_deferred(cli, name, target)
