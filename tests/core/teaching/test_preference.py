"""Protects the explanation judge's arithmetic: order swap, wins / ties / losses, differential
and its confidence interval, and the fixed judge sample."""

import math

import polars as pl
import pytest

from flywheel_core.teaching.judge_sample import judge_sample
from flywheel_core.teaching.preference import (
    PairResult,
    combine_orders,
    flip,
    judge_both_orders,
    tally,
)


def test_differential_and_confidence_interval_arithmetic() -> None:
    outcomes = ["candidate"] * 6 + ["tie"] * 2 + ["baseline"] * 2
    result = tally([PairResult(str(i), "c", "b", w, "") for i, w in enumerate(outcomes)])
    scores = [1] * 6 + [0] * 2 + [-1] * 2
    mean = sum(scores) / 10
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / 9)
    assert result.differential == pytest.approx(0.4)
    assert result.ci_low == pytest.approx(mean - 1.959964 * sd / math.sqrt(10), abs=1e-4)
    assert result.ci_high == pytest.approx(min(1.0, mean + 1.959964 * sd / math.sqrt(10)), abs=1e-4)
    everything = tally([PairResult(str(i), "c", "b", "candidate", "") for i in range(5)])
    assert (everything.differential, everything.ci_low, everything.ci_high) == (1.0, 1.0, 1.0)
    assert tally([]).pairs == 0


def test_order_combination_rules() -> None:
    assert flip("A") == "B" and flip("tie") == "tie" and flip(None) is None
    assert combine_orders("A", "A") == "A"
    assert combine_orders("A", "B") == "tie"
    assert combine_orders(None, "B") == "B"
    assert combine_orders(None, None) is None
    calls = []

    def once(first, second):
        calls.append((first, second))
        return "A", "first shown wins"

    assert judge_both_orders(once, "x", "y")[0] == "tie"
    assert calls == [("x", "y"), ("y", "x")]


def test_judge_sample_is_fixed_and_stratified() -> None:
    items = pl.DataFrame(
        [
            {"item_id": f"h{k:03d}", "severity": ("critical", "major", "minor", "trivial")[k % 4]}
            for k in range(40)
        ]
    )
    first = judge_sample(items, 8)
    assert first.equals(judge_sample(items.reverse(), 8))
    assert first["severity"].value_counts()["count"].to_list() == [2, 2, 2, 2]
    assert first["item_id"].to_list() != items.head(8)["item_id"].to_list()
    assert judge_sample(items.head(3), 8).height == 3
