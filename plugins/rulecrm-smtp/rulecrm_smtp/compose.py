"""A rulecrm Message as an e-mail: the subject convention, a Message-ID from the action key, UTF-8."""
from __future__ import annotations

import functools
import re
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

KEY_HEADER = "X-Rulecrm-Key"
DEFAULT_SUBJECT = "rulecrm: {rule}"
# "Subject: <line>" then a blank line opens the text: the line is the subject, the rest the body.
SUBJECT_LINE = re.compile(r"Subject:[ \t]*(?P<subject>[^\r\n]*\S)[ \t]*\r?\n[ \t]*\r?\n")


@functools.cache
def _policy():
    """Non-ASCII bodies go out base64-encoded, so no server needs 8BITMIME. Built on first use:
    rulecrm loads this plugin for every command, and email.policy takes milliseconds to import."""
    from email import policy

    return policy.default.clone(cte_type="7bit")


def subject_and_body(message, default: str | None = None) -> tuple[str, str]:
    """`message.subject`, else a leading `Subject: ...` line and blank line, else the default naming the rule."""
    text = message.text
    match = SUBJECT_LINE.match(text)
    if match:
        subject, text = match["subject"], text[match.end():]
    else:
        subject = None
    subject = message.subject or subject or (default or DEFAULT_SUBJECT).format(rule=message.rule)
    return " ".join(subject.split()), text


def message_id(key: str, sender: str) -> str:
    """`<rulecrm.<hash of the key>@<sender's domain>>`: the same action always gets the same Message-ID."""
    import hashlib  # loads OpenSSL: when an e-mail is built, not with the plugin

    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "rulecrm.invalid"
    return f"<rulecrm.{digest}@{domain}>"


def build_email(message, *, sender: str, default_subject: str | None = None, now: float | None = None) -> EmailMessage:
    """The e-mail for one message, From `sender` To `message.address`."""
    subject, body = subject_and_body(message, default_subject)
    email = EmailMessage(policy=_policy())
    email["From"] = sender
    email["To"] = message.address
    email["Subject"] = subject
    email["Date"] = formatdate(now, usegmt=True)
    email["Message-ID"] = message_id(message.key, sender)
    email[KEY_HEADER] = message.key
    email.set_content(body, charset="utf-8")
    return email
