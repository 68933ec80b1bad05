"""otelpeers benchmarks: `python -m bench.run` (root; see docs/benchmarks.md)."""
