"""Who may change the state through the console, and protection against cross-site requests.

* Without `--token-env` the console is read-only: every change is refused.
* With it, a person signs in once with the token; the console then sets an HttpOnly session
  cookie (a random id this process remembers, never the token itself).
* Every POST carries a CSRF token in its form: an HMAC, under a key drawn when the process starts,
  of the browser's `rulecrm_csrf` cookie (double-submit: another site can neither read the cookie
  nor compute the HMAC). Its Origin (or, without one, its Referer) must be the console's own.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from urllib.parse import urlsplit

CSRF_COOKIE = "rulecrm_csrf"
SESSION_COOKIE = "rulecrm_session"
CSRF_FIELD = "csrf_token"
MAX_SESSIONS = 1000  # the oldest sign-ins are forgotten beyond this many


class Refused(Exception):
    """A change refused (403); `reason` is a message key of `rulecrm.console.i18n`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Guard:
    """The token, the sign-ins of this process and the CSRF key."""

    def __init__(self, token: str | None):
        self._token = token
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, None] = {}  # insertion-ordered: the oldest go first
        self._lock = threading.Lock()

    @property
    def writable(self) -> bool:
        return self._token is not None

    # -- sign-in ---------------------------------------------------------------------------

    def sign_in(self, token: str) -> str | None:
        """A new session id when `token` is the console's token; None otherwise."""
        if self._token is None or not hmac.compare_digest(token.encode(), self._token.encode()):
            return None
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session] = None
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
        return session

    def sign_out(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(session or "", None)

    def signed_in(self, session: str | None) -> bool:
        if not self.writable or not session:
            return False
        with self._lock:
            return session in self._sessions

    # -- CSRF ------------------------------------------------------------------------------

    @staticmethod
    def new_csrf_cookie() -> str:
        return secrets.token_urlsafe(32)

    def csrf_token(self, cookie: str) -> str:
        """The form token that goes with the browser's CSRF cookie."""
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def check_post(self, *, cookie: str | None, form_token: str | None, origin: str | None, referer: str | None,
                   own_origin: str) -> None:
        """Raise Refused unless the request comes from a page of this console (Origin/Referer and CSRF token)."""
        source = origin if origin and origin != "null" else _origin_of(referer)
        if source is None:
            raise Refused("refused_origin")
        if source.rstrip("/") != own_origin.rstrip("/"):
            raise Refused("refused_origin")
        if not cookie or not form_token or not hmac.compare_digest(self.csrf_token(cookie), form_token):
            raise Refused("refused_csrf")

    def check_change(self, session: str | None) -> None:
        """Raise Refused unless changes are allowed and this browser signed in with the token."""
        if not self.writable:
            raise Refused("refused_read_only")
        if not self.signed_in(session):
            raise Refused("refused_token")


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"
