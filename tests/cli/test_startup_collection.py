"""The command line starts with the cyclic collector paused, then freezes what starting built.

Run in a fresh interpreter, as the `rulecrm` script runs: a plugin records whether automatic
collection was on while plugins loaded and while its command ran, and how many objects were frozen.
"""
from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import gc, json, sys
import click
from rulecrm import __main__ as script
from rulecrm import plugins
from rulecrm.hookspecs import hookimpl

seen = {}

class Spy:
    @hookimpl
    def rulecrm_register_commands(self, cli):
        seen["collecting while starting"] = gc.isenabled()

        @cli.command("spy")
        def spy():
            seen["collecting while the command runs"] = gc.isenabled()
            seen["frozen"] = gc.get_freeze_count()

build = plugins.build_plugin_manager
plugins.build_plugin_manager = lambda **kw: build(extra=[Spy()], **kw)
if sys.argv[1] == "off":
    gc.disable()  # a program that turned the collector off itself
sys.argv = ["rulecrm", "spy"]
try:
    script.main()
except SystemExit:
    pass
print(json.dumps(seen))
"""


def run(collector: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROGRAM, collector], capture_output=True, text=True,
                            timeout=120, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_collection_is_paused_while_starting_and_on_for_the_command():
    seen = run("on")
    assert seen["collecting while starting"] is False
    assert seen["collecting while the command runs"] is True
    assert seen["frozen"] > 10_000  # the modules, classes and functions of a started command line


def test_a_collector_turned_off_before_stays_off():
    seen = run("off")
    assert seen["collecting while the command runs"] is False
