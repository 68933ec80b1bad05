"""Test doubles and synthetic data: flow records, DNS wire messages, a fake /proc.

Used by the tests and the benchmarks (which must not import tests/); nothing in the agent
imports this package.
"""
