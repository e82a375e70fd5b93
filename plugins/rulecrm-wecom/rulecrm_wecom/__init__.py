"""WeCom (企业微信) channels for rulecrm: the group robot webhook and the customer-contact API."""
from __future__ import annotations

from .contact import ContactChannel
from .robot import RobotChannel

__all__ = ["ContactChannel", "RobotChannel"]
__version__ = "0.1.0"
