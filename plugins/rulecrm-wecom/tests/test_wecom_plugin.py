"""The installed distribution as rulecrm sees it: entry point, channel types, `rulecrm check`."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rulecrm.plugins import build_plugin_manager, channel_types, check_rules_with, describe

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def manager():
    return build_plugin_manager()


def check(tmp_path, text):
    """Runs `rulecrm check` on a rules dir holding `text`: (exit code, stdout, stderr)."""
    (tmp_path / "shop.yaml").write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "rulecrm", "check", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_entry_point_provides_both_channel_types(manager):
    types = channel_types(manager)
    robot, contact = types["wecom-robot"], types["wecom-contact"]
    assert (robot.limits.per_minute, robot.limits.max_bytes, robot.limits.rate_key) == (20, 2048, "key_env")
    assert robot.address_field is None and not robot.supports_tags
    assert contact.address_field == "wecom_id" and contact.supports_tags
    assert {"key_env", "base_url", "msgtype", "mentioned_list"} <= robot.setting_names
    assert {"corp_id", "secret_env", "sender", "base_url", "tag_group"} <= contact.setting_names


def test_rulecrm_plugins_names_the_distribution(manager):
    [row] = [row for row in describe(manager) if "wecom-robot" in row["channel_types"]]
    assert row["distribution"].startswith("rulecrm-wecom ")
    assert row["hooks"] == ["rulecrm_channel_types"]


def test_check_accepts_a_robot_with_key_env(tmp_path):
    code, out, err = check(tmp_path, "channels:\n  robot: {type: wecom-robot, key_env: WECOM_ROBOT_KEY}\n")
    assert (code, out) == (0, "")
    assert "0 error(s), 0 warning(s)" in err


def test_check_rejects_a_key_written_in_the_file(tmp_path):
    code, out, _ = check(tmp_path, "channels:\n  robot: {type: wecom-robot, key: abc}\n")
    assert code != 0
    assert re.search(r"shop\.yaml:2:\d+: error: secret 'key' must not be written", out)
    assert "abc" not in out.replace("'key'", "")


def test_check_wants_the_contact_settings(tmp_path):
    code, out, _ = check(tmp_path, "channels:\n  wecom: {type: wecom-contact, corp_id: ww1}\n")
    assert code != 0
    assert "needs `secret`" in out and "needs `sender`" in out


def test_the_readme_rule_file_checks_clean(tmp_path, manager):
    example = re.search(r"## A rule file using both\n\n```yaml\n(.*?)```", README.read_text("utf-8"), re.S)[1]
    (tmp_path / "shop.yaml").write_text(example, encoding="utf-8")
    _ruleset, diagnostics = check_rules_with(manager, tmp_path)
    assert [d.format() for d in diagnostics] == []


def test_channels_declared_in_a_rule_file_build_and_send(tmp_path, manager, wecom):
    channelset = pytest.importorskip("rulecrm.channels.instances")
    from wecom_standin import CONTACT_SECRET, ROBOT_KEY, message

    (tmp_path / "shop.yaml").write_text(
        "channels:\n"
        f"  robot: {{type: wecom-robot, key_env: K, mentioned_list: [li, wang], base_url: '{wecom.url}'}}\n"
        f"  wecom: {{type: wecom-contact, corp_id: corp-1, secret_env: S, sender: rep-li, base_url: '{wecom.url}'}}\n",
        encoding="utf-8")
    ruleset, diagnostics = check_rules_with(manager, tmp_path)
    assert not diagnostics
    channels = channelset.ChannelSet(ruleset, manager, env={"K": ROBOT_KEY, "S": CONTACT_SECRET})
    robot, _ = channels.get("robot")
    contact, _ = channels.get("wecom")
    assert robot.send(message("hi")).ok and contact.send(message("hi")).ok
    assert wecom.robot_messages[ROBOT_KEY][0]["text"]["mentioned_list"] == ["li", "wang"]
    assert "K" in str(channels.rate_bucket("robot")) and ROBOT_KEY not in str(channels.rate_bucket("robot"))
    channels.close()
