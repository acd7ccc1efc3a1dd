"""95% intervals for the held-out numbers, so a difference inside the noise is read as noise.

- accuracy: the Wilson score interval of a proportion;
- macro-F1: a percentile bootstrap over the items (fixed seed: the same data gives the same
  interval);
- the difference between two models scored on the same items: a paired interval over the
  per-item differences (each item is +1, 0 or -1), much tighter than two independent intervals.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from statistics import NormalDist

from flywheel_core.teaching.metrics import classification_report


def z_value(confidence: float) -> float:
    """Two-sided normal quantile: 1.96 for 0.95."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of correct/n ((0, 1) when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_macro_f1(
    truth: Sequence[str],
    predicted: Sequence[str],
    confidence: float = 0.95,
    resamples: int = 400,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1 over the items."""
    n = len(truth)
    if n == 0:
        return 0.0, 1.0
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        report = classification_report([truth[i] for i in picks], [predicted[i] for i in picks])
        values.append(report["macro_f1"])
    values.sort()
    tail = (1 - confidence) / 2
    low = values[int(tail * (resamples - 1))]
    high = values[math.ceil((1 - tail) * (resamples - 1))]
    return low, high


def paired_difference(
    truth: Sequence[str],
    first: Sequence[str],
    second: Sequence[str],
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Accuracy of `second` minus accuracy of `first` on the same items, with its interval."""
    n = len(truth)
    if n == 0:
        return 0.0, 0.0, 0.0
    diffs = [int(b == t) - int(a == t) for t, a, b in zip(truth, first, second, strict=True)]
    mean = sum(diffs) / n
    variance = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    half = z_value(confidence) * math.sqrt(variance / n)
    return mean, mean - half, mean + half
