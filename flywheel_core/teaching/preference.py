"""Pairwise preference between two models' explanations: order-swapped verdicts and the tally.

Every pair is judged twice, once with each explanation shown first. A verdict that changes with
the order is position bias, not a preference, and counts as a tie. A pair for which no valid
verdict came back (a bad reply, or a call skipped because the teacher's budget was spent) was
not judged: it is counted as invalid, never as a tie, and stays out of the differential and its
interval. Over the n judged pairs with w wins, t ties and l losses for the candidate, the
preference differential is ``(w - l) / n`` in [-1, 1]: the mean of per-pair scores +1 / 0 / -1.
Its 95% confidence interval is the normal interval of that mean (sample standard deviation of
the scores), clipped to [-1, 1]; with a handful of pairs it is wide, which is the honest answer.
With no judged pair it is 0 with the interval [-1, 1] (nothing is known).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Z95 = 1.959964


def flip(winner: str | None) -> str | None:
    """A verdict given with the explanations swapped, in the original A/B order."""
    return {"A": "B", "B": "A"}.get(winner or "", winner)


def combine_orders(first: str | None, second_unswapped: str | None) -> str | None:
    """One winner from a verdict in A/B order and one in B/A order (already mapped back to
    A/B): agreement stands, disagreement is a tie, None (no valid verdict) if neither is."""
    valid = [v for v in (first, second_unswapped) if v is not None]
    if not valid:
        return None
    return valid[0] if len(set(valid)) == 1 else "tie"


@dataclass(frozen=True)
class PairResult:
    item_id: str
    candidate: str
    baseline: str
    winner: str | None  # "candidate" | "baseline" | "tie" | None (no valid verdict)
    reason: str


def outcome(winner_ab: str | None) -> str | None:
    """Candidate-vs-baseline outcome of a combined verdict in which A is the candidate."""
    return {"A": "candidate", "B": "baseline", "tie": "tie"}.get(winner_ab or "")


@dataclass(frozen=True)
class Preference:
    pairs: int
    wins: int
    ties: int
    losses: int
    invalid: int
    differential: float
    ci_low: float
    ci_high: float

    def as_row(self) -> dict:
        return self.__dict__.copy()


def tally(results: Sequence[PairResult]) -> Preference:
    """Wins / ties / losses of the candidate and the preference differential with its 95% CI."""
    wins = sum(r.winner == "candidate" for r in results)
    losses = sum(r.winner == "baseline" for r in results)
    invalid = sum(r.winner is None for r in results)
    ties = sum(r.winner == "tie" for r in results)
    judged = [r for r in results if r.winner is not None]
    n = len(judged)
    if n == 0:
        return Preference(len(results), 0, 0, 0, invalid, 0.0, -1.0, 1.0)
    points = {"candidate": 1, "baseline": -1}
    scores = [points.get(r.winner or "", 0) for r in judged]
    mean = sum(scores) / n
    if n > 1:
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
        half = Z95 * sd / math.sqrt(n)
    else:
        half = 2.0
    return Preference(
        pairs=len(results),
        wins=wins,
        ties=ties,
        losses=losses,
        invalid=invalid,
        differential=round(mean, 4),
        ci_low=round(max(-1.0, mean - half), 4),
        ci_high=round(min(1.0, mean + half), 4),
    )


JudgeOnce = Callable[[str, str], tuple[str | None, str]]


def judge_both_orders(judge_once: JudgeOnce, first: str, second: str) -> tuple[str | None, str]:
    """(winner in A/B order or None, reason): ``judge_once(a, b)`` sees ``first`` as A, then
    ``second`` as A; a flip with the order is a tie."""
    winner_ab, reason_ab = judge_once(first, second)
    winner_ba, reason_ba = judge_once(second, first)
    winner = combine_orders(winner_ab, flip(winner_ba))
    if winner is None:
        return None, f"no valid verdict ({reason_ab}; {reason_ba})"
    if winner_ab is not None and winner_ba is not None and winner_ab != flip(winner_ba):
        return "tie", f"the verdict changed with the order (position bias): {reason_ab}"
    return winner, reason_ab if winner_ab is not None else reason_ba
