"""The rule expression language: parse, check and compile; never `eval`."""
