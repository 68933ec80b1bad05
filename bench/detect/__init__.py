"""Synthetic Zeek traffic with ground truth, a scorer, and the baselines detection rules must beat.

`python -m bench.detect.generate --out DIR --seed N` writes conn.log, dns.log and truth.json;
`python -m bench.detect.baselines` scores the naive per-hour rules and a RITA-style beacon
score on that data. Pure Python, no root, no kernel; nothing here imports from tests/.
"""
