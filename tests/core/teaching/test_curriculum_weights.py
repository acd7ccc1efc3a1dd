"""Curriculum weights: the class balance lifts rare severities without changing the mean."""

from __future__ import annotations

import polars as pl
import pytest

from flywheel_core.teaching.curriculum_weights import balance_factors, weigh

# A reviewers'-like mix: many trivial and minor verdicts, few critical.
MIX = {"critical": 8, "major": 22, "minor": 30, "trivial": 40}


def curriculum(mix: dict[str, int]) -> pl.DataFrame:
    severities = [s for s, n in mix.items() for _ in range(n)]
    return pl.DataFrame({"severity": severities, "origin": ["feedback"] * len(severities)})


def class_mass(frame: pl.DataFrame) -> dict[str, float]:
    mass = frame.group_by("severity").agg(pl.col("weight").sum())
    return dict(zip(mass["severity"], mass["weight"], strict=True))


def test_full_balance_gives_every_severity_the_same_total_weight():
    weighted = weigh(curriculum(MIX), {}, boost=0.0, feedback_weight=1.5, class_balance=1.0)
    assert weighted["weight"].mean() == pytest.approx(1.0)
    assert all(m == pytest.approx(25.0) for m in class_mass(weighted).values())


def test_half_balance_sits_between_the_mix_and_equal_shares():
    weighted = weigh(curriculum(MIX), {}, boost=0.0, feedback_weight=1.5, class_balance=0.5)
    mass = class_mass(weighted)
    assert weighted["weight"].mean() == pytest.approx(1.0)
    # critical: 8 rows, weight up by sqrt(25 / 8) before normalising -> between 8 and 25
    assert 8 < mass["critical"] < 25 < mass["trivial"] < 40
    per_row = {s: mass[s] / n for s, n in MIX.items()}
    assert per_row["critical"] > per_row["major"] > per_row["minor"] > per_row["trivial"]


def test_no_balance_keeps_the_curriculum_mix():
    weighted = weigh(curriculum(MIX), {}, boost=0.0, feedback_weight=1.5, class_balance=0.0)
    assert weighted["weight"].to_list() == pytest.approx([1.0] * sum(MIX.values()))


def test_balance_factors_ignore_absent_classes():
    factors = balance_factors({"critical": 0.0, "major": 10.0, "minor": 30.0}, 1.0)
    assert factors == pytest.approx({"major": 2.0, "minor": 2 / 3})
