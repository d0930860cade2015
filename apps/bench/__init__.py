"""Benchmarks behind ``eqagent bench <name>``: each returns a JSON-able dict of the figures its issue names."""
