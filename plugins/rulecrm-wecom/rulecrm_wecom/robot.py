"""The `wecom-robot` channel: posts to a WeCom group through the group robot's webhook."""
from __future__ import annotations

import logging
import threading
import urllib.parse
from collections import OrderedDict

from rulecrm.channels import DELIVERED, ChannelConfig, ChannelConfigError, Delivery, Message

from .protocol import as_list, classify, split_text
from .settings import base_url_setting, timeout_setting
from .transport import CallFailed, call

log = logging.getLogger(__name__)

MAX_BYTES = {"text": 2048, "markdown": 4096}  # content limits of the robot's message types
_REMEMBERED_SENDS = 1024


class RobotChannel:
    """Sends each message's text to the robot's group; long texts go as several marked parts."""

    def __init__(self, config: ChannelConfig):
        self.name = config.name
        self._key = webhook_key(config.secret("key"))
        self._base_url = base_url_setting(config)
        self.msgtype = str(config.get("msgtype") or "text")
        if self.msgtype not in MAX_BYTES:
            raise ChannelConfigError(f"channel {self.name!r}: msgtype must be text or markdown, not {self.msgtype!r}")
        self.mentioned_list = as_list(config.get("mentioned_list"))
        self.mentioned_mobile_list = as_list(config.get("mentioned_mobile_list"))
        self.timeout = timeout_setting(config)
        self._sent_parts: OrderedDict[str, int] = OrderedDict()  # message key -> parts already delivered
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RobotChannel(name={self.name!r}, msgtype={self.msgtype!r})"

    def parts(self, text: str) -> list[str]:
        """The contents posted for `text`, in order (markdown mentions are appended as `<@userid>`)."""
        if self.msgtype == "markdown" and self.mentioned_list:
            text = text + "\n" + " ".join(f"<@{user}>" for user in self.mentioned_list)
        return split_text(text, MAX_BYTES[self.msgtype])

    def units(self, message: Message) -> int:
        """How many robot messages this send posts (each counts toward the 20 a minute)."""
        with self._lock:
            done = self._sent_parts.get(message.key, 0)
        return max(1, len(self.parts(message.text)) - done)

    def send(self, message: Message) -> Delivery:
        """Posts every part not yet delivered; DELIVERED once all are, else the first failure."""
        parts = self.parts(message.text)
        with self._lock:
            done = self._sent_parts.get(message.key, 0)
        for index in range(done, len(parts)):
            delivery = self._post(self._payload(parts[index], last=index == len(parts) - 1))
            if not delivery.ok:
                self._remember(message.key, index)
                if len(parts) > 1:
                    delivery = Delivery(delivery.status, delivery.code,
                                        f"part {index + 1}/{len(parts)}: {delivery.detail}", delivery.retry_after)
                log.warning("wecom-robot %s: %s %s %s", self.name, delivery.status, delivery.code, delivery.detail)
                return delivery
        self._forget(message.key)
        return Delivery(DELIVERED)

    def close(self) -> None:
        pass

    def _payload(self, content: str, *, last: bool) -> dict:
        """The webhook body; @-mentions ride on the last part only, so people are pinged once."""
        if self.msgtype == "markdown":
            return {"msgtype": "markdown", "markdown": {"content": content}}
        text = {"content": content}
        if last and self.mentioned_list:
            text["mentioned_list"] = list(self.mentioned_list)
        if last and self.mentioned_mobile_list:
            text["mentioned_mobile_list"] = list(self.mentioned_mobile_list)
        return {"msgtype": "text", "text": text}

    def _post(self, payload: dict) -> Delivery:
        url = f"{self._base_url}/cgi-bin/webhook/send?key={urllib.parse.quote(self._key)}"
        try:
            body = call(url, payload, timeout=self.timeout, secrets=(self._key,))
        except CallFailed as failed:
            return failed.delivery
        return classify(body, (self._key,))

    def _remember(self, key: str, parts_done: int) -> None:
        """Keeps how far a failed send got, so a retry does not post the delivered parts again."""
        if parts_done == 0:
            return
        with self._lock:
            self._sent_parts[key] = parts_done
            self._sent_parts.move_to_end(key)
            while len(self._sent_parts) > _REMEMBERED_SENDS:
                self._sent_parts.popitem(last=False)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._sent_parts.pop(key, None)


def webhook_key(value: str) -> str:
    """The robot key, also when the environment variable holds the whole webhook URL."""
    value = value.strip()
    if "://" in value:
        keys = urllib.parse.parse_qs(urllib.parse.urlsplit(value).query).get("key")
        if not keys:
            raise ChannelConfigError("the robot webhook URL in the environment has no key= parameter")
        return keys[0]
    return value

