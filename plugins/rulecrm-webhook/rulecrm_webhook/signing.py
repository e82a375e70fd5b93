"""HMAC-SHA256 webhook signatures: how the channel signs a body and how a receiver checks it."""
from __future__ import annotations

import json
import time
from datetime import datetime

PREFIX = "sha256="
TIMESTAMP_HEADER = "X-Rulecrm-Timestamp"
SIGNATURE_HEADER = "X-Rulecrm-Signature"


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def sign(secret: str | bytes, body: str | bytes) -> str:
    """The `X-Rulecrm-Signature` value: `sha256=` + hex HMAC-SHA256 of the raw body."""
    # hashlib and hmac load OpenSSL (milliseconds): imported when signing, not with the plugin
    import hashlib
    import hmac

    return PREFIX + hmac.new(_as_bytes(secret), _as_bytes(body), hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: str | bytes, header: str | None,
                     tolerance: float | None = 300, *, now: float | None = None) -> bool:
    """True if `header` signs exactly this raw body and the body's `sent_at` is at most `tolerance`
    seconds away from now (the body is signed, so its time cannot be altered: replays go stale).

    Pass the raw request body (bytes, before any JSON parsing); `tolerance=None` skips the
    freshness check.
    """
    import hmac

    if not header or not header.strip().startswith(PREFIX):
        return False
    if not hmac.compare_digest(sign(secret, body), header.strip()):
        return False
    if tolerance is None:
        return True
    try:
        sent_at = datetime.fromisoformat(json.loads(body)["sent_at"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return False
    return abs((time.time() if now is None else now) - sent_at) <= tolerance
