"""The `rulecrm init` starter: rule files and sample events, shipped as package data."""
