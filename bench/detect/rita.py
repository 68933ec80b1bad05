"""A RITA-style beacon score: the published reference the `beacon` rule has to beat.

Written from RITA's documentation and its description of the method (activecm/rita, v5:
"timestamp, data size, duration and histogram" subscores, weighted 1/4 each; the older
v4 README for the Bowley skew / MAD definitions). No RITA code is used. Per (internal
source, external destination) pair and per 24-hour window, with at least 4 connections:

- timestamp score: the mean of (1 - |Bowley skew|) and (median - MAD) / median of the
  non-zero gaps between connection times (whole seconds); the skew counts as 0 when the
  quartile range is under 10 s or the median equals a quartile;
- data size score: the same two measures over the bytes each connection sent (MAD part
  0 when the median is under 1 byte);
- histogram score: connections per hour over the window; the larger of 1 - coefficient of
  variation of the hourly counts, and (when at least 11 hours have connections) the
  share of hours falling into the two most common count buckets (bucket width 5 % of the
  busiest hour; one hour may be an outlier);
- duration score: when at least 6 hours have connections, the larger of the covered share
  of the window (last - first connection) and the longest run of consecutive busy hours
  (wrapping around) divided by 12;
- prevalence modifier (RITA's defaults): +0.15 when at most 2 % of internal hosts talk to
  the destination, -0.15 when at least 50 % do.

RITA drops internal-to-internal connections by default; so does this. A pair is reported
as a beacon when its score reaches the threshold (RITA's severities: 0.5 low, 0.7 medium,
0.9 high).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.detect.truth import Detection
from otelpeers.detect.zeek import ZeekConn

WINDOW_S = 86400
MIN_CONNS = 4
PREVALENCE_UP, PREVALENCE_UP_MAX = 0.15, 0.02
PREVALENCE_DOWN, PREVALENCE_DOWN_MIN = 0.15, 0.5
HIST_BUCKET = 0.05
BIMODAL_MIN_HOURS = 11
DURATION_MIN_HOURS = 6
IDEAL_HOURS = 12


@dataclass(frozen=True, slots=True)
class BeaconScore:
    src: str
    dst: str
    window: int
    conns: int
    ts: float
    ds: float
    hist: float
    dur: float
    prevalence: float
    score: float  # after the prevalence modifier, in [0, 1]
    last_ns: int


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """Median of the lower half, median, median of the upper half (the middle value of an
    odd-length list belongs to neither half)."""
    n = len(xs)
    half = n // 2
    lower, upper = xs[:half], xs[half + (n % 2):]
    return _median(lower), _median(xs), _median(upper)


def bowley_score(xs: Sequence[float]) -> float:
    """1 - |Bowley skew| of sorted values (skew 0 when the spread is too small to judge)."""
    q1, q2, q3 = _quartiles(xs)
    den = q3 - q1
    skew = (q1 + q3 - 2 * q2) / den if den >= 10 and q2 not in (q1, q3) else 0.0
    return 1.0 - abs(skew)


def mad_score(xs: Sequence[float], default: float) -> float:
    """(median - MAD) / median, floored at 0: 1 for perfectly steady values."""
    m = _median(xs)
    if m < 1:
        return default
    mad = _median([abs(x - m) for x in xs])
    return max(0.0, (m - mad) / m)


def _hist_and_duration(seconds: Sequence[int], w_start: int, w_len: int) -> tuple[float, float]:
    bins = [0] * 24
    step = w_len / 24
    for s in seconds:
        bins[min(23, int((s - w_start) / step))] += 1
    total = sum(bins)
    mean = total / 24
    sd = math.sqrt(sum((b - mean) ** 2 for b in bins) / 24)
    cv = sd / mean if mean else 1.0
    cv_score = 0.0 if cv > 1 else 1.0 - cv
    busy = [b for b in bins if b]
    width = math.ceil(max(bins) * HIST_BUCKET) or 1
    buckets: dict[int, int] = defaultdict(int)
    for b in busy:
        buckets[b // width] += 1
    bimodal = 0.0
    if len(busy) >= BIMODAL_MIN_HOURS:
        top = sorted(buckets.values(), reverse=True)[:2]
        bimodal = min(1.0, sum(top) / max(len(busy) - 1, 1))
    hist = max(cv_score, bimodal)
    dur = 0.0
    if len(busy) >= DURATION_MIN_HOURS:
        coverage = min(1.0, (seconds[-1] - seconds[0]) / w_len)
        run = longest = 0
        for b in bins + bins:  # wrap around the end of the window
            run = run + 1 if b else 0
            longest = max(longest, run)
        consistency = min(1.0, min(longest, 24) / IDEAL_HOURS)
        dur = max(coverage, consistency)
    return hist, dur


def score_pairs(conns: Sequence[ZeekConn], *, internal: Callable[[str], bool],
                start_ns: int, end_ns: int) -> list[BeaconScore]:
    """Score every (internal source, external destination) pair per 24-hour window."""
    pairs: dict[tuple[str, str, int], tuple[list[int], list[int], list[int]]] = {}
    talkers: dict[str, set[str]] = defaultdict(set)
    hosts: set[str] = set()
    for c in conns:
        r = c.record
        src, dst = r.local_addr, r.peer_addr
        if not internal(src) or internal(dst):
            continue
        hosts.add(src)
        talkers[dst].add(src)
        w = (r.start_ns - start_ns) // (WINDOW_S * 10**9)
        entry = pairs.get((src, dst, w))
        if entry is None:
            entry = pairs[(src, dst, w)] = ([], [], [])
        entry[0].append(r.start_ns // 10**9)
        entry[1].append(r.counters.bytes_out)
        entry[2].append(r.start_ns)
    n_hosts = max(len(hosts), 1)
    out = []
    for (src, dst, w), (secs, sizes, stamps) in pairs.items():
        if len(secs) < MIN_CONNS:
            continue
        secs.sort()
        gaps = sorted(b - a for a, b in zip(secs, secs[1:], strict=False))
        gaps = [g for g in gaps if g > 0]
        if len(gaps) < 3:
            continue
        ts_score = (bowley_score(gaps) + mad_score(gaps, 1.0)) / 2
        sizes.sort()
        ds_score = (bowley_score(sizes) + mad_score(sizes, 0.0)) / 2
        w_start = start_ns // 10**9 + w * WINDOW_S
        w_len = min(WINDOW_S, end_ns // 10**9 - w_start)
        if w_len <= 0:
            continue
        hist, dur = _hist_and_duration(secs, w_start, w_len)
        base = 0.25 * (ts_score + ds_score + hist + dur)
        prevalence = len(talkers[dst]) / n_hosts
        if prevalence <= PREVALENCE_UP_MAX:
            base += PREVALENCE_UP
        elif prevalence >= PREVALENCE_DOWN_MIN:
            base -= PREVALENCE_DOWN
        out.append(BeaconScore(src, dst, w, len(secs), ts_score, ds_score, hist, dur,
                               prevalence, min(1.0, max(0.0, base)), max(stamps)))
    return out


def rita_beacons(scores: Sequence[BeaconScore], threshold: float) -> list[Detection]:
    return [Detection("beacon", s.src, s.dst, s.last_ns, s.score) for s in scores
            if s.score >= threshold]
