"""rulecrm-smtp: a rulecrm channel that sends each message as an e-mail."""
from .channel import SmtpChannel
from .compose import KEY_HEADER, build_email, message_id, subject_and_body

__all__ = ["KEY_HEADER", "SmtpChannel", "build_email", "message_id", "subject_and_body"]
