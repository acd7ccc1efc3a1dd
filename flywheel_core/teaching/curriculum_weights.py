"""Per-example weights of a curriculum: weaker severities, rarer severities and reviewer
feedback count more.

Three factors multiply: the weak-class boost (``1 + boost * (1 - F1)`` of the class on the last
exam), the feedback weight (reviewer rows over teacher and seed rows), and the class balance:
a severity whose rows carry a share ``s`` of the curriculum's weight is scaled by
``(1 / (K * s)) ** class_balance`` (K = severities present), so at 1 every severity carries the
same total weight and at 0 the curriculum keeps its own mix. Reviewers rate far more comments
trivial or minor than critical; without the balance a student learns to (almost) never answer
critical and macro-F1 stalls. The weights are normalised to mean 1 so the learning rate keeps
its meaning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import polars as pl

from flywheel_core.settings import CurriculumSettings


def class_weights(strengths: Mapping[str, float], boost: float) -> dict[str, float]:
    """1 + boost * (1 - F1 of the class on the last exam): a class the student never gets right
    weighs 1 + boost."""
    return {c: 1.0 + boost * (1.0 - f1) for c, f1 in strengths.items()}


def balance_factors(weights_by_class: Mapping[str, float], power: float) -> dict[str, float]:
    """``(1 / (K * share)) ** power`` per class, from each class's total weight."""
    total = sum(weights_by_class.values())
    present = {c: w for c, w in weights_by_class.items() if w > 0}
    if not present or power == 0:
        return {c: 1.0 for c in weights_by_class}
    return {c: (total / (len(present) * w)) ** power for c, w in present.items()}


def weigh(
    curriculum: pl.DataFrame,
    strengths: Mapping[str, float],
    boost: float,
    feedback_weight: float,
    class_balance: float = 0.0,
) -> pl.DataFrame:
    """Adds `weight`, normalised to mean 1 so the learning rate keeps its meaning."""
    per_class = class_weights(strengths, boost)
    raw = pl.col("severity").replace_strict(per_class, default=1.0, return_dtype=pl.Float64) * (
        pl.when(pl.col("origin") == "feedback").then(feedback_weight).otherwise(1.0)
    )
    weighted = curriculum.with_columns(weight=raw)
    mass = weighted.group_by("severity").agg(pl.col("weight").sum())
    factors = balance_factors(
        dict(zip(mass["severity"], mass["weight"], strict=True)), class_balance
    )
    weighted = weighted.with_columns(
        weight=pl.col("weight")
        * pl.col("severity").replace_strict(factors, default=1.0, return_dtype=pl.Float64)
    )
    mean = weighted["weight"].mean() or 1.0
    return weighted.with_columns(weight=pl.col("weight") / mean)


CURRICULUM_COLUMNS = [
    "item_id",
    "origin",
    "added_in_cycle",
    "code",
    "review",
    "severity",
    "explanation",
    "explanation_source",
]


def merge_curriculum(
    previous: pl.DataFrame,
    new_rows: pl.DataFrame,
    strengths: Mapping[str, float],
    settings: CurriculumSettings,
) -> pl.DataFrame:
    """The previous curriculum plus this cycle's rows (an item already in it keeps its first
    occurrence), weighted toward the weak classes and reviewer feedback."""
    combined = pl.concat([previous.select(CURRICULUM_COLUMNS), new_rows.select(CURRICULUM_COLUMNS)])
    combined = combined.unique(subset="item_id", keep="first", maintain_order=True)
    return weigh(
        combined,
        strengths,
        settings.weak_class_boost,
        settings.feedback_weight,
        settings.class_balance,
    )


def curriculum_version(frame: pl.DataFrame) -> str:
    """Content hash of a weighted curriculum (item ids and weights)."""
    keys = sorted(f"{r['item_id']}:{r['weight']:.4f}" for r in frame.iter_rows(named=True))
    return hashlib.sha256("|".join(keys).encode()).hexdigest()[:16]


def explanation_sources(frame: pl.DataFrame) -> dict[str, int]:
    """How many reference explanations each source wrote (llm-teacher/..., corpus-template/1,
    reviewer); rows without one train the severity task only."""
    counts = frame.group_by("explanation_source").len().sort("explanation_source")
    return {
        (row["explanation_source"] or "none (severity only)"): int(row["len"])
        for row in counts.iter_rows(named=True)
    }
