"""The webhook channel: one signed JSON POST per message, answered with a rulecrm Delivery."""
from __future__ import annotations

import json
import logging
import string
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, ChannelConfigError, Delivery, Limits
from rulecrm.masking import mask_secrets

from .settings import DEFAULT_TIMEOUT
from .signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

if TYPE_CHECKING:
    import urllib.error

# urllib.request and http.client are imported when a channel is built or sends: rulecrm loads this
# plugin for every command, `check` included, and they take several milliseconds to import.

log = logging.getLogger("rulecrm_webhook")

BODY_FIELDS = ("key", "channel", "address", "customer_id", "rule", "kind", "subject", "text", "sent_at")
RETRYABLE_STATUSES = frozenset({408, 429})  # and every 5xx
USER_AGENT = "rulecrm-webhook/0.1"
_HEADER_SAFE = "".join(sorted(set(string.punctuation) - {"%"}))
_SNIPPET = 200  # characters of a receiver's error body kept in Delivery.detail
_READ = 4096  # bytes of that body read: masked whole before it is cut to _SNIPPET


def _no_redirect_opener():
    """An opener that never re-sends a signed POST elsewhere: a 3xx answer comes back as an HTTPError."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    return urllib.request.build_opener(NoRedirect)


class WebhookChannel:
    """POSTs each message as JSON to `url`, signed with the secret named by `secret_env`."""

    def __init__(self, config, *, clock=time.time):
        self.name = config.name
        self.url = _url(config)
        self.timeout = config.positive("timeout", DEFAULT_TIMEOUT, float)
        self.limits = Limits(per_minute=config.positive("per_minute", None, int))
        self._secret = config.secret("secret") if config.get("secret_env") else None
        # A URL given through `url_env` carries a token: a receiver echoing it (a 404 page) must not leak it.
        self._secrets = tuple(s for s in (self._secret, self.url if config.get("url_env") else None) if s)
        self._clock = clock
        self._opener = _no_redirect_opener()
        if self._secret is None:
            log.warning("channel %r: no secret_env is set, so its webhook payloads are not signed", self.name)

    def __repr__(self) -> str:
        return f"WebhookChannel({self.name!r})"

    def body(self, message, now: float) -> bytes:
        """The JSON body: `BODY_FIELDS` in that order, UTF-8, compact."""
        sent_at = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
        record = {field: getattr(message, field) for field in BODY_FIELDS[:-1]}
        record["sent_at"] = sent_at
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def headers(self, message, timestamp: int, body: bytes) -> dict[str, str]:
        """Content type, idempotency key, timestamp (as in the body's `sent_at`) and, with a secret,
        the signature of the body."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": header_safe(message.key),
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        return headers

    def send(self, message) -> Delivery:
        """Exactly one POST; retrying a RETRYABLE answer is the dispatcher's job."""
        import urllib.request

        now = self._clock()
        body = self.body(message, now)
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers=self.headers(message, int(now), body))
        delivery = self._post(request)
        log.debug("channel %r: %s -> %s %s", self.name, message.key, delivery.status, delivery.code or "")
        return delivery

    def close(self) -> None:
        pass

    def _post(self, request) -> Delivery:
        import http.client
        import urllib.error

        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
                return Delivery(DELIVERED, code=str(response.status))
        except urllib.error.HTTPError as error:
            return self._answer(error)
        except TimeoutError:
            return self._timed_out()
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                return self._timed_out()
            return Delivery(RETRYABLE, detail=self._clean(f"cannot connect: {error.reason}"))
        except (http.client.HTTPException, OSError) as error:
            return Delivery(RETRYABLE, detail=self._clean(f"connection failed: {error!r}"))

    def _timed_out(self) -> Delivery:
        return Delivery(RETRYABLE, detail=f"no answer within {self.timeout:g}s")

    def _answer(self, error: urllib.error.HTTPError) -> Delivery:
        status = error.code
        detail = f"HTTP {status} {error.reason}"
        snippet = mask_secrets(_read_snippet(error), self._secrets, limit=_SNIPPET)  # mask, then cut
        if snippet:
            detail += f": {snippet}"
        if status in RETRYABLE_STATUSES or status >= 500:
            retry_after = retry_after_seconds(error.headers.get("Retry-After"), self._clock())
            return Delivery(RETRYABLE, code=str(status), detail=self._clean(detail), retry_after=retry_after)
        if 300 <= status < 400:
            detail += " (redirects are not followed: set `url` to the final address)"
        return Delivery(PERMANENT, code=str(status), detail=self._clean(detail))

    def _clean(self, text: str) -> str:
        """Error text as it may be logged: never the signing secret nor a `url_env` URL, in any form."""
        return mask_secrets(text, self._secrets)


def header_safe(key: str) -> str:
    """The key as an HTTP header value: unchanged if printable ASCII, else percent-encoded as UTF-8."""
    if key.isascii() and key.isprintable():
        return key
    return quote(key, safe=_HEADER_SAFE)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def _read_snippet(error: urllib.error.HTTPError) -> str:
    """The start of the error body, whitespace collapsed; not cut yet (masking comes first)."""
    import http.client

    try:
        raw = error.read(_READ)
    except (OSError, http.client.HTTPException, AttributeError):
        return ""
    finally:
        error.close()
    return " ".join(raw.decode("utf-8", "replace").split())


def _url(config) -> str:
    url = config.get("url") or (config.secret("url") if config.get("url_env") else None)
    if not url:
        raise ChannelConfigError(f"channel {config.name!r}: set `url` to the address to POST to")
    try:
        parts = urlsplit(str(url))
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise ChannelConfigError(f"channel {config.name!r}: `url` must be an http:// or https:// address")
    return str(url)
