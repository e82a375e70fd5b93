"""rulecrm's testing kit: drive a shop's rules in tests and check what they do."""
from .harness import Shop
from .recording import RecordingChannel

__all__ = ["RecordingChannel", "Shop"]
