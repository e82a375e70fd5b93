"""rulecrm-demo-sms: a rulecrm channel that sends text messages through the Demo SMS gateway."""
__version__ = "0.1.0"
