"""The plugin author's guide is tested: its files are the example's, its example installs and passes its tests."""
from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rulecrm import hookspecs

pytestmark = pytest.mark.slow  # installs the guide's example plugin with pip

DOCS = Path(__file__).resolve().parents[2] / "docs"
GUIDE = DOCS / "plugins.md"
EXAMPLE = DOCS / "examples" / "rulecrm-demo-sms"
# A file of the example is shown as a fenced block right after `<!-- file: PATH -->`.
SHOWN = re.compile(r"<!-- file: (?P<path>\S+) -->\n```[a-z]*\n(?P<text>.*?)```\n", re.S)
IGNORED = ("__pycache__", ".egg-info", "build", ".pytest_cache")


def example_files() -> list[str]:
    return sorted(
        path.relative_to(EXAMPLE).as_posix() for path in EXAMPLE.rglob("*")
        if path.is_file() and not any(part.endswith(IGNORED) for part in path.relative_to(EXAMPLE).parts)
    )


def shown_files() -> dict[str, str]:
    return {match["path"]: match["text"] for match in SHOWN.finditer(GUIDE.read_text(encoding="utf-8"))}


def hook_names() -> list[str]:
    return [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("rulecrm_")]


@pytest.mark.parametrize("path", example_files())
def test_every_file_of_the_example_is_in_the_guide_as_it_is(path):
    shown = shown_files()
    assert path in shown, f"docs/plugins.md does not show {path}; add <!-- file: {path} --> and its block"
    assert shown[path] == (EXAMPLE / path).read_text(encoding="utf-8"), f"docs/plugins.md shows an old {path}"


def test_the_guide_shows_no_file_the_example_lacks():
    assert sorted(shown_files()) == example_files()


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented(hook):
    headings = re.findall(r"^#+ .*$", GUIDE.read_text(encoding="utf-8"), re.M)
    assert any(re.search(rf"\b{hook}\b", heading) for heading in headings), f"document {hook} under a heading"


def typed_signature(hook: str) -> str:
    """`name(arg: Type, ...) -> Type` as the hook specification declares it (annotations are strings there)."""
    signature = inspect.signature(getattr(hookspecs, hook))
    arguments = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    return f"{hook}({arguments}) -> {signature.return_annotation}"


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_with_its_signature(hook):
    """The heading of each hook shows its typed signature exactly as `rulecrm/hookspecs.py` declares it."""
    signature = inspect.signature(getattr(hookspecs, hook))
    assert signature.return_annotation is not inspect.Signature.empty, f"type what {hook} returns"
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()), f"type {hook}"
    headings = re.findall(r"^#+ .*$", GUIDE.read_text(encoding="utf-8"), re.M)
    assert any(f"`{typed_signature(hook)}`" in heading for heading in headings), (
        f"docs/plugins.md: give {hook} the heading `{typed_signature(hook)}`")


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_says_when_it_is_called_and_what_it_returns(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Called" in doc and "return" in doc.lower(), f"the docstring of {hook} says when it is called and returns"


def test_the_guide_documents_only_hooks_that_exist():
    mentioned = set(re.findall(r"\brulecrm_[a-z_]+(?=\()", GUIDE.read_text(encoding="utf-8")))
    assert mentioned <= set(hook_names())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example installed into a directory of its own, which only subprocesses put on their path."""
    work = tmp_path_factory.mktemp("demo-sms")
    source = work / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(*(f"*{name}" for name in IGNORED)))
    target = work / "site"
    install(source, target)
    return target


def install(source: Path, target: Path) -> None:
    """`pip install --target`, offline; with a setuptools that needs `wheel` to build and no `wheel`, the same
    layout from setuptools itself (the package and its metadata, entry points included)."""
    if importlib.util.find_spec("wheel") is not None or _setuptools_builds_wheels():
        run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
             "--target", str(target), str(source)], cwd=source)
        return
    target.mkdir()
    run([sys.executable, "-c", "from setuptools import setup; setup()", "--quiet", "egg_info", "--egg-base",
         str(target)], cwd=source)
    shutil.copytree(source / "rulecrm_demo_sms", target / "rulecrm_demo_sms")


def _setuptools_builds_wheels() -> bool:
    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)


def run(command, *, cwd, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def env_with(target: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(target), env.get("PYTHONPATH"))))
    return env


def test_rulecrm_plugins_lists_the_installed_example(installed):
    result = run([sys.executable, "-m", "rulecrm", "plugins"], cwd=installed.parent, env=env_with(installed))
    assert "demo-sms  (rulecrm-demo-sms 0.1.0)" in result.stdout
    assert "channel types: demo-sms" in result.stdout
    assert "rulecrm_register_commands" in result.stdout


def test_the_example_adds_its_command(installed):
    result = run([sys.executable, "-m", "rulecrm", "demo-sms-send", "--help"], cwd=installed.parent,
                 env=env_with(installed))
    assert "Send one test message" in result.stdout


def test_the_examples_own_tests_pass_against_a_local_gateway(installed):
    tests = installed.parent / "src" / "tests"
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tests.parent),
                  str(tests)], cwd=installed.parent, env=env_with(installed))
    assert " passed" in result.stdout


def test_the_main_environment_is_untouched():
    assert importlib.util.find_spec("rulecrm_demo_sms") is None
