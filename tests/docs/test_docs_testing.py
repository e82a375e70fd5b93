"""docs/testing.md cannot rot: its files are written into a project and its tests run under pytest."""
from __future__ import annotations

import re
import subprocess
import sys

pytest_plugins = ["pytester"]

BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", re.S)


def doc_files(repo):
    return BLOCK.findall((repo / "docs" / "testing.md").read_text(encoding="utf-8"))


def test_the_guide_has_a_rules_file_and_python_tests(repo):
    names = [name for name, _body in doc_files(repo)]
    assert "rules/shop.yaml" in names and sum(name.endswith(".py") for name in names) >= 2


def test_the_guides_examples_pass_under_pytest(repo, pytester):
    for name, body in doc_files(repo):
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "tests")
    result.assert_outcomes(passed=9)


def test_the_guides_rules_pass_rulecrm_test(repo, tmp_path):
    for name, body in doc_files(repo):
        if name.endswith(".yaml"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(body, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "rulecrm", "test", str(tmp_path / "rules"), "--examples", "50"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_guides_flawed_example_prints_what_the_guide_shows(repo, tmp_path):
    text = (repo / "docs" / "testing.md").read_text(encoding="utf-8")
    flawed = next(block for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if "channels: [sms]" in block)
    shown = re.search(r"exact output, run from the directory that holds `rules/`\):\n\n```text\n(.*?)```", text, re.S)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shop.yaml").write_text(flawed, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "rulecrm", "test", "rules/"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "not counted by the cap: rule chat-promo" in result.stdout
    assert result.stdout == shown.group(1)
