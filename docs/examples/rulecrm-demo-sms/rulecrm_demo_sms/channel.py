"""The demo-sms channel: POSTs each message to the gateway and classifies its answer."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, ChannelConfig, Delivery, Message

RETRYABLE_ERRORS = frozenset({"throttled", "gateway_busy"})  # gateway error codes worth another try


class DemoSmsChannel:
    """One configured gateway: `url` and the token from the environment variable named by `token_env`."""

    def __init__(self, config: ChannelConfig, *, timeout: float = 10.0):
        self.url = config.get("url")
        self.sender = config.get("sender")
        self._token = config.secret("token")  # raises ChannelConfigError naming the variable when unset
        self.timeout = timeout

    def send(self, message: Message) -> Delivery:
        body = {"to": message.address, "text": message.text, "sender": self.sender, "id": message.key}
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return classify(response.status, _json(response.read()), None)
        except urllib.error.HTTPError as error:
            return classify(error.code, _json(error.read()), error.headers.get("Retry-After"))
        except OSError as error:  # refused, reset, timed out, DNS: the gateway may be back soon
            return Delivery(RETRYABLE, code="unreachable", detail=str(getattr(error, "reason", error)))

    def close(self) -> None:
        pass


def classify(status: int, answer: dict, retry_after: str | None) -> Delivery:
    """The gateway's answer as a Delivery: delivered, worth retrying, or final."""
    if 200 <= status < 300:
        if answer.get("ok"):
            return Delivery(DELIVERED, code=answer.get("message_id"))
        error = str(answer.get("error", "unknown"))
        return Delivery(RETRYABLE if error in RETRYABLE_ERRORS else PERMANENT, code=error)
    seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
    if status == 429 or status >= 500:
        return Delivery(RETRYABLE, code=str(status), retry_after=seconds)
    return Delivery(PERMANENT, code=str(status), detail=str(answer.get("error", "")))


def _json(raw: bytes) -> dict:
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
