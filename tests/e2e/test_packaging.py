"""A built (non-editable) wheel carries everything a user needs: the starter, the version."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rulecrm

pytestmark = pytest.mark.slow  # builds a wheel and installs it

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from the checkout, unpacked into a directory that shadows the checkout."""
    wheels = tmp_path_factory.mktemp("wheels")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = wheels.glob("rulecrm-*.whl")
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return build.stdout + build.stderr, target


def run_from(target, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(target)}
    # -P: do not put the working directory (a checkout) before the installed copy
    return subprocess.run([sys.executable, "-P", "-m", "rulecrm", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_the_build_has_no_packaging_warning(installed):
    output, _target = installed
    assert "absent from the `packages` configuration" not in output


def test_init_works_from_the_installed_wheel(installed, tmp_path):
    _output, target = installed
    where = subprocess.run([sys.executable, "-P", "-c", "import rulecrm; print(rulecrm.__file__)"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(target))  # the wheel's copy, not the checkout's
    made = run_from(target, "init", "shop", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    names = sorted(p.name for p in (tmp_path / "shop" / "rules").iterdir())
    assert names == sorted([*(p.name for p in (REPO / "rulecrm" / "starter").glob("*.yaml")), "rulecrm.schema.json"])
    schema = json.loads((tmp_path / "shop" / "rules" / "rulecrm.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"  # made by the wheel's generator
    assert (tmp_path / "shop" / "events.jsonl").stat().st_size > 0
    checked = run_from(target, "check", "shop/rules", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_version_is_the_package_version(installed, tmp_path):
    _output, target = installed
    result = run_from(target, "--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"rulecrm, version {rulecrm.__version__}"
