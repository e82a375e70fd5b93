"""WeCom (企业微信) channels for rulecrm: the group robot webhook and the customer-contact API."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rulecrm import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {"ContactChannel": ".contact", "RobotChannel": ".robot"}
__all__ = ["ContactChannel", "RobotChannel"]
# rulecrm imports this package for its entry point (`rulecrm_wecom.plugin`) in every command
__getattr__ = lazy_exports(globals(), _EXPORTS)

if TYPE_CHECKING:
    from .contact import ContactChannel
    from .robot import RobotChannel
