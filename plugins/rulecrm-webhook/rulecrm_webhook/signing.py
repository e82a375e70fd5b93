"""HMAC-SHA256 webhook signatures: how the channel signs a body and how a receiver checks it."""
from __future__ import annotations

import hashlib
import hmac
import time

PREFIX = "sha256="
TIMESTAMP_HEADER = "X-Rulecrm-Timestamp"
SIGNATURE_HEADER = "X-Rulecrm-Signature"


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def sign(secret: str | bytes, timestamp: int | str, body: str | bytes) -> str:
    """The `X-Rulecrm-Signature` value: `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>`."""
    signed = _as_bytes(str(timestamp)) + b"." + _as_bytes(body)
    return PREFIX + hmac.new(_as_bytes(secret), signed, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, timestamp: int | str, body: str | bytes, header: str | None,
                     tolerance: float | None = 300, *, now: float | None = None) -> bool:
    """True if `header` signs exactly this timestamp and raw body, sent at most `tolerance` seconds ago.

    Pass the raw request body (bytes, before any JSON parsing) and the two headers as received;
    `tolerance=None` skips the freshness check.
    """
    if not header or not header.startswith(PREFIX):
        return False
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if tolerance is not None and abs((time.time() if now is None else now) - sent_at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, str(timestamp).strip(), body), header.strip())
