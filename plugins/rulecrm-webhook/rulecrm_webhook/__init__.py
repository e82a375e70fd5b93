"""rulecrm-webhook: a rulecrm channel that POSTs each message as HMAC-signed JSON."""
from .channel import BODY_FIELDS, WebhookChannel
from .signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature

__all__ = ["BODY_FIELDS", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookChannel", "sign", "verify_signature"]
