"""Settings both WeCom channel types take: the API root and the answer timeout."""
from __future__ import annotations

from rulecrm.channels import ChannelConfig, ChannelConfigError

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
DEFAULT_TIMEOUT = 10.0
DEFAULT_TAG_GROUP = "rulecrm"  # the corp tag group wecom-contact creates new tags in


def base_url_setting(config: ChannelConfig) -> str:
    """The `base_url` setting without a trailing slash (default: WeCom's public API root)."""
    value = str(config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ChannelConfigError(f"channel {config.name!r}: base_url must start with http:// or https://")
    return value


def timeout_setting(config: ChannelConfig) -> float:
    """The `timeout` setting in seconds (default 10)."""
    value = config.get("timeout")
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if seconds <= 0:
        raise ChannelConfigError(f"channel {config.name!r}: timeout must be a positive number of seconds")
    return seconds
