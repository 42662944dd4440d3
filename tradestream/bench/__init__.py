"""Benchmarks (`just bench`): measured on this machine, reported as figures from one run."""
