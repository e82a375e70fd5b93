"""`python -m rulecrm` runs the command line."""
from .cli import entry

entry()
