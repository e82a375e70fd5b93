"""Benchmarks of rulecrm and the converters of the real data they run on."""
