"""Installed (`pip install -e plugins/rulecrm-smtp`): rulecrm finds the type and `check` knows its settings."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from rulecrm.plugins import address_fields, build_plugin_manager, channel_types, describe


def check(tmp_path, channel: str) -> subprocess.CompletedProcess:
    (tmp_path / "channels.yaml").write_text(f"channels:\n  mail: {channel}\n", encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "rulecrm", "check", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)


def test_entry_point_is_registered():
    [point] = [p for p in entry_points(group="rulecrm") if p.name == "smtp"]
    assert point.value == "rulecrm_smtp.plugin" and point.dist.name == "rulecrm-smtp"


def test_plugin_manager_provides_the_type():
    manager = build_plugin_manager()
    smtp = channel_types(manager)["smtp"]
    assert smtp.setting_names == {"host", "port", "sender", "username_env", "password_env", "starttls",
                                  "timeout", "subject"}
    assert address_fields(manager)["smtp"] == "email"
    [row] = [row for row in describe(manager) if row["channel_types"] == ["smtp"]]
    assert row["distribution"].startswith("rulecrm-smtp ")


def test_check_accepts_the_channel_without_warnings(tmp_path):
    result = check(tmp_path, "{type: smtp, host: 127.0.0.1, port: 2525, sender: shop@example.com}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s), 0 warning(s)" in result.stderr


def test_check_accepts_credentials_from_the_environment(tmp_path):
    result = check(tmp_path, "{type: smtp, host: smtp.example.com, port: 465, sender: shop@example.com, "
                             "username_env: SMTP_USER, password_env: SMTP_PASSWORD}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_rejects_an_inline_password(tmp_path):
    result = check(tmp_path, "{type: smtp, host: 127.0.0.1, sender: shop@example.com, password: hunter2}")
    assert result.returncode == 1
    assert "secret 'password' must not be written" in result.stdout and "hunter2" not in result.stdout


def test_check_requires_host_and_sender(tmp_path):
    result = check(tmp_path, "{type: smtp, port: 2525}")
    assert result.returncode == 1
    assert "needs `host`" in result.stdout and "needs `sender`" in result.stdout


def test_readme_channel_example_passes_check(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "channels.yaml").write_text(example, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "rulecrm", "check", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "0 warning(s)" in result.stderr, result.stdout + result.stderr
