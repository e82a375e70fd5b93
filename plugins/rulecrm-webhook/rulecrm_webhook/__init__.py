"""rulecrm-webhook: a rulecrm channel that POSTs each message as HMAC-signed JSON."""
from typing import TYPE_CHECKING

from rulecrm import lazy_exports

_EXPORTS = {"BODY_FIELDS": ".channel", "WebhookChannel": ".channel", "SIGNATURE_HEADER": ".signing",
            "TIMESTAMP_HEADER": ".signing", "sign": ".signing", "verify_signature": ".signing"}
__all__ = ["BODY_FIELDS", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookChannel", "sign", "verify_signature"]
# rulecrm imports this package for its entry point (`rulecrm_webhook.plugin`) in every command
__getattr__ = lazy_exports(globals(), _EXPORTS)

if TYPE_CHECKING:
    from .channel import BODY_FIELDS, WebhookChannel
    from .signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature
