"""How many questions of each severity, and which items: balanced, tilted toward weak classes."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

from flywheel_core.severity import SEVERITIES


def allocate(total: int, strengths: Mapping[str, float] | None, min_share: float) -> dict[str, int]:
    """Split `total` over the severities.

    With no previous evaluation the split is even. Otherwise each severity keeps a floor of
    `min_share` of the total and the rest goes in proportion to its weakness (1 - strength, where
    the strength is the class's F1 on the last exam: recall alone would call a class strong that
    the student merely answers for everything), with
    largest-remainder rounding so the counts always add up to `total`.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    if not strengths:
        weights = dict.fromkeys(SEVERITIES, 1.0)
        floor = 0
    else:
        weights = {c: 1.0 - strengths.get(c, 0.0) + 0.05 for c in SEVERITIES}
        floor = math.floor(total * min_share)
    rest = total - floor * len(SEVERITIES)
    norm = sum(weights.values())
    exact = {c: rest * weights[c] / norm for c in SEVERITIES}
    counts = {c: floor + math.floor(exact[c]) for c in SEVERITIES}
    leftover = total - sum(counts.values())
    by_remainder = sorted(SEVERITIES, key=lambda c: (-(exact[c] % 1), SEVERITIES.index(c)))
    for c in by_remainder[:leftover]:
        counts[c] += 1
    return counts


def stable_rank(key: str, salt: str) -> str:
    """A deterministic pseudo-random sort key (same salt, same order, on every machine)."""
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()


def draw_questions(
    pool: Sequence[Mapping],
    allocation: Mapping[str, int],
    salt: str,
    avoid_ids: Iterable[str] = (),
) -> list[dict]:
    """Pick items per severity: unseen ones (not in `avoid_ids`) first, in a salted stable order."""
    avoid = set(avoid_ids)
    chosen: list[dict] = []
    for severity in SEVERITIES:
        candidates = [dict(item) for item in pool if item["severity"] == severity]
        candidates.sort(key=lambda it: (it["item_id"] in avoid, stable_rank(it["item_id"], salt)))
        chosen.extend(candidates[: allocation.get(severity, 0)])
    return chosen
