"""`python -m rulecrm` runs the command line."""
from .cli import main

main()
