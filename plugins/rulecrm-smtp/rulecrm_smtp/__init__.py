"""rulecrm-smtp: a rulecrm channel that sends each message as an e-mail."""
from typing import TYPE_CHECKING

from rulecrm import lazy_exports

_EXPORTS = {"SmtpChannel": ".channel", "KEY_HEADER": ".compose", "build_email": ".compose",
            "message_id": ".compose", "subject_and_body": ".compose"}
__all__ = ["KEY_HEADER", "SmtpChannel", "build_email", "message_id", "subject_and_body"]
# rulecrm imports this package for its entry point (`rulecrm_smtp.plugin`) in every command
__getattr__ = lazy_exports(globals(), _EXPORTS)

if TYPE_CHECKING:
    from .channel import SmtpChannel
    from .compose import KEY_HEADER, build_email, message_id, subject_and_body
