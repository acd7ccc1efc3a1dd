"""Per-example weights of a curriculum: weaker severities and reviewer feedback count more."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl


def class_weights(strengths: Mapping[str, float], boost: float) -> dict[str, float]:
    """1 + boost * (1 - F1 of the class on the last exam): a class the student never gets right
    weighs 1 + boost."""
    return {c: 1.0 + boost * (1.0 - f1) for c, f1 in strengths.items()}


def weigh(
    curriculum: pl.DataFrame,
    strengths: Mapping[str, float],
    boost: float,
    feedback_weight: float,
) -> pl.DataFrame:
    """Adds `weight`, normalised to mean 1 so the learning rate keeps its meaning."""
    per_class = class_weights(strengths, boost)
    raw = pl.col("severity").replace_strict(per_class, default=1.0, return_dtype=pl.Float64) * (
        pl.when(pl.col("origin") == "feedback").then(feedback_weight).otherwise(1.0)
    )
    weighted = curriculum.with_columns(weight=raw)
    mean = weighted["weight"].mean() or 1.0
    return weighted.with_columns(weight=pl.col("weight") / mean)
