"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records envelopes and refuses chosen recipients."""
from __future__ import annotations

from email import message_from_bytes, policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from rulecrm.channels import Message

USERNAME = "shop-mailer"
PASSWORD = "pw-9Zr4-test-only"


class Recorder:
    """The server's handler: keeps every accepted envelope; `refuse[address] = "451 ..."` refuses one."""

    def __init__(self):
        self.envelopes = []
        self.refuse: dict[str, str] = {}
        self.logins: list[tuple[str, str]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def emails(self):
        """The accepted messages, parsed."""
        return [message_from_bytes(envelope.content, policy=policy.default) for envelope in self.envelopes]

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        """Accept USERNAME/PASSWORD only."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == (USERNAME, PASSWORD), handled=False)


class LocalController(Controller):
    """An aiosmtpd Controller on 127.0.0.1 and a free port (port 0), learnt once it listens."""

    def __init__(self, handler, **kwargs):
        super().__init__(handler, hostname="127.0.0.1", port=0, server_hostname="mx.test", **kwargs)

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def message(**fields) -> Message:
    defaults = dict(key="refill|c-1|e-9", channel="mail", address="lin@example.com",
                    text="Subject: 您的茶快喝完了\n\n林女士，您好！小青柑还剩几泡？", kind="marketing",
                    customer_id="c-1", rule="refill")
    return Message(**{**defaults, **fields})
