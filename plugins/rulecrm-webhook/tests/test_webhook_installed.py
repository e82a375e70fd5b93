"""Installed (`pip install -e plugins/rulecrm-webhook`): rulecrm finds the type and `check` knows its settings."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from rulecrm.channels import ChannelConfig
from rulecrm.plugins import build_plugin_manager, channel_types, describe
from rulecrm_webhook import WebhookChannel


def check(tmp_path, channel: str) -> subprocess.CompletedProcess:
    (tmp_path / "channels.yaml").write_text(f"channels:\n  sms: {channel}\n", encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "rulecrm", "check", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)


def test_entry_point_is_registered():
    [point] = [p for p in entry_points(group="rulecrm") if p.name == "webhook"]
    assert point.value == "rulecrm_webhook.plugin" and point.dist.name == "rulecrm-webhook"


def test_plugin_manager_provides_the_type():
    manager = build_plugin_manager()
    webhook = channel_types(manager)["webhook"]
    assert webhook.setting_names == {"url", "secret_env", "timeout", "per_minute"}
    assert webhook.address_field is None and webhook.limits.per_minute is None
    channel = webhook.factory(ChannelConfig("sms", "webhook", {"url": "http://127.0.0.1:8080/sms"}))
    assert isinstance(channel, WebhookChannel)
    [row] = [row for row in describe(manager) if row["channel_types"] == ["webhook"]]
    assert row["distribution"].startswith("rulecrm-webhook ")


def test_check_accepts_the_channel_without_warnings(tmp_path):
    result = check(tmp_path, '{type: webhook, url: "http://127.0.0.1:8080/sms", secret_env: HOOK_SECRET}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s), 0 warning(s)" in result.stderr


def test_check_rejects_an_inline_secret(tmp_path):
    result = check(tmp_path, '{type: webhook, url: "http://127.0.0.1:8080/sms", secret: abc}')
    assert result.returncode == 1
    assert "channels.yaml:2:" in result.stdout and "secret 'secret' must not be written" in result.stdout
    assert "abc" not in result.stdout + result.stderr


def test_check_rejects_unknown_and_missing_settings(tmp_path):
    result = check(tmp_path, "{type: webhook, urll: http://127.0.0.1:8080/sms}")
    assert result.returncode == 1
    assert "unknown setting 'urll'" in result.stdout and "needs `url`" in result.stdout


def test_readme_channel_example_passes_check(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "channels.yaml").write_text(example, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "rulecrm", "check", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "0 warning(s)" in result.stderr, result.stdout + result.stderr
