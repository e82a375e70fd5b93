"""The customer-contact access token: fetched with gettoken, cached until shortly before it expires."""
from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable

from rulecrm.channels import PERMANENT, Delivery

from .transport import CallFailed, call_ok

REFRESH_MARGIN_SECONDS = 300.0  # fetch a new token this long before WeCom says the old one expires


class TokenCache:
    """One corp secret's access token, shared by the calls of a channel instance (thread-safe)."""

    def __init__(self, base_url: str, corp_id: str, secret: str, *, timeout: float,
                 clock: Callable[[], float] | None = None):
        self._base_url = base_url
        self._corp_id = corp_id
        self._secret = secret
        self._timeout = timeout
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in a detail or a log line: the corp secret and the current token."""
        return tuple(s for s in (self._secret, self._token) if s)

    def get(self) -> str:
        """A valid token, from the cache or from gettoken (raises `CallFailed`)."""
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._fetch()
            return self._token

    def invalidate(self, token: str) -> None:
        """Drops `token` (WeCom rejected it) unless another call already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> None:
        query = urllib.parse.urlencode({"corpid": self._corp_id, "corpsecret": self._secret})
        body = call_ok(f"{self._base_url}/cgi-bin/gettoken?{query}", timeout=self._timeout, secrets=self.secrets)
        expires_in = float(body.get("expires_in") or 7200)
        token = body.get("access_token")
        if not token:
            raise CallFailed(Delivery(PERMANENT, code="invalid-response", detail="gettoken answered without a token"))
        self._token = str(token)
        self._expires_at = self._clock() + max(expires_in - REFRESH_MARGIN_SECONDS, expires_in / 2)
