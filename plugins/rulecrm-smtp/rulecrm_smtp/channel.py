"""The SMTP channel: one e-mail per message over one SMTP session, answered with a rulecrm Delivery."""
from __future__ import annotations

import logging
import re
from email.utils import parseaddr
from typing import TYPE_CHECKING

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, ChannelConfigError, Delivery
from rulecrm.masking import mask_personal, mask_secrets

from .compose import build_email
from .settings import DEFAULT_PORT, DEFAULT_TIMEOUT, SMTPS_PORT

if TYPE_CHECKING:
    import smtplib

# smtplib and ssl are imported when a message is sent: rulecrm loads this plugin for every command,
# `check` included, and they take several milliseconds to import.

log = logging.getLogger("rulecrm_smtp")

_ADDRESS = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+")


class SmtpChannel:
    """Sends each message as an e-mail through `host`: SMTPS on port 465, STARTTLS when asked."""

    def __init__(self, config):
        self.name = config.name
        self.host = _required(config, "host")
        self.port = config.positive("port", DEFAULT_PORT, int)
        self.sender = _required(config, "sender")
        self.envelope_from = parseaddr(self.sender)[1]
        if not _ADDRESS.fullmatch(self.envelope_from):
            raise ChannelConfigError(
                f"channel {self.name!r}: `sender` must be an e-mail address such as shop@example.com")
        self.starttls = config.flag("starttls")
        self.smtps = self.port == SMTPS_PORT
        if self.smtps and self.starttls:
            raise ChannelConfigError(
                f"channel {self.name!r}: port 465 is SMTPS (TLS from the start); drop `starttls`")
        self.timeout = config.positive("timeout", DEFAULT_TIMEOUT, float)
        self.default_subject = config.get("subject")
        self._username = config.secret("username") if config.get("username_env") else None
        self._password = config.secret("password") if config.get("password_env") else None
        if (self._username is None) != (self._password is None):
            raise ChannelConfigError(
                f"channel {self.name!r}: set both `username_env` and `password_env`, or neither")

    def __repr__(self) -> str:
        return f"SmtpChannel({self.name!r}, {self.host!r}, {self.port})"

    def send(self, message) -> Delivery:
        """One SMTP session delivering one e-mail; retrying a RETRYABLE answer is the dispatcher's job."""
        if not _ADDRESS.fullmatch(message.address or ""):
            return Delivery(PERMANENT, detail="the address is not an e-mail address")
        delivery = self._deliver(message)
        log.debug("channel %r: %s -> %s %s", self.name, message.key, delivery.status, delivery.code or "")
        return delivery

    def close(self) -> None:
        pass

    def _deliver(self, message) -> Delivery:
        import smtplib
        import ssl

        try:
            email = build_email(message, sender=self.sender, default_subject=self.default_subject)
        except (ValueError, TypeError) as error:
            return Delivery(PERMANENT, detail=f"cannot build the e-mail: {error}")
        try:
            session = self._connect()
            try:
                if self.starttls:
                    session.starttls(context=ssl.create_default_context())
                if self._username is not None:
                    session.login(self._username, self._password)
                session.send_message(email, from_addr=self.envelope_from, to_addrs=[message.address])
            finally:
                _quit(session)
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            return self._reply(code, reply)
        except smtplib.SMTPResponseException as error:
            return self._reply(error.smtp_code, error.smtp_error)
        except smtplib.SMTPNotSupportedError as error:
            return Delivery(PERMANENT, detail=self._clean(f"the server does not support it: {error}"))
        except TimeoutError:
            return Delivery(RETRYABLE, detail=f"no answer from the server within {self.timeout:g}s")
        except (smtplib.SMTPException, OSError) as error:
            return Delivery(RETRYABLE, detail=self._clean(f"cannot reach the server: {error!r}"))
        return Delivery(DELIVERED, code="250")

    def _connect(self) -> smtplib.SMTP:
        import smtplib
        import ssl

        if self.smtps:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def _reply(self, code: int, reply) -> Delivery:
        """A server's refusal: 4xx may pass, 5xx will not."""
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        status = PERMANENT if 500 <= code < 600 else RETRYABLE
        # every address in the reply, not only the recipient's, is masked (`l***@example.com`)
        detail = mask_personal(self._clean(f"{code} {' '.join(text.split())}"))
        return Delivery(status, code=str(code), detail=detail)

    def _clean(self, text: str) -> str:
        """Error text as it may be logged: never a credential, in any form a server may echo it."""
        return mask_secrets(text, (self._password, self._username))


def _quit(session: smtplib.SMTP) -> None:
    import smtplib

    try:
        session.quit()
    except (smtplib.SMTPException, OSError):
        session.close()


def _required(config, name: str) -> str:
    value = config.get(name) or (config.secret(name) if config.get(f"{name}_env") else None)
    if not value:
        raise ChannelConfigError(f"channel {config.name!r}: set `{name}`")
    return str(value)
