"""One HTTP call to WeCom with the standard library, turned into a JSON body or a failed Delivery."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterable

from rulecrm.channels import PERMANENT, RETRYABLE, Delivery
from rulecrm.masking import mask_secrets

from .protocol import classify, classify_http_status

USER_AGENT = "rulecrm-wecom/0.1"


class CallFailed(Exception):
    """A call did not produce a usable answer; `delivery` says whether to retry (never holds secrets)."""

    def __init__(self, delivery: Delivery):
        super().__init__(delivery.detail)
        self.delivery = delivery


def call(url: str, payload: dict | None = None, *, timeout: float, secrets: Iterable[str] = ()) -> dict:
    """GET `url` (or POST `payload` as JSON) and return the JSON body of an HTTP 200 answer.

    Transport failures raise `CallFailed`: timeouts, connection errors and 5xx are retryable,
    other statuses and unreadable bodies are not. The body's errcode is left to the caller.
    """
    # Imported on the first call: rulecrm loads this plugin for every command, `check` included, and
    # urllib.request (http.client, email) takes about 10 ms to import.
    import urllib.error
    import urllib.request

    secrets = tuple(secrets)
    data = None if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("User-Agent", USER_AGENT)
    if data is not None:
        request.add_header("Content-Type", "application/json; charset=utf-8")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        error.close()
        raise CallFailed(classify_http_status(error.code, mask_secrets(str(error.reason or ""), secrets))) from None
    except (TimeoutError, socket.timeout):
        raise CallFailed(Delivery(RETRYABLE, code="timeout", detail=f"no answer within {timeout:g}s")) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        kind = "timeout" if isinstance(reason, (TimeoutError, socket.timeout)) else "network"
        detail = mask_secrets(f"{type(reason).__name__}: {reason}", secrets)
        raise CallFailed(Delivery(RETRYABLE, code=kind, detail=detail)) from None
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CallFailed(Delivery(PERMANENT, code="invalid-response", detail="HTTP 200 without a JSON body")) from None
    if not isinstance(body, dict):
        raise CallFailed(Delivery(PERMANENT, code="invalid-response", detail="HTTP 200 with a non-object JSON body"))
    return body


def ensure_ok(body: dict, secrets: Iterable[str] = ()) -> dict:
    """`body` when its errcode is 0, else `CallFailed` with what the errcode means."""
    delivery = classify(body, secrets)
    if not delivery.ok:
        raise CallFailed(delivery)
    return body


def call_ok(url: str, payload: dict | None = None, *, timeout: float, secrets: Iterable[str] = ()) -> dict:
    """Like `call`, but a non-zero errcode raises `CallFailed` too."""
    secrets = tuple(secrets)
    return ensure_ok(call(url, payload, timeout=timeout, secrets=secrets), secrets)
