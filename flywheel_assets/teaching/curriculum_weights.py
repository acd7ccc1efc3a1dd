"""Per-example weights of a curriculum: weaker severities and reviewer feedback count more."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl


def class_weights(recalls: Mapping[str, float], boost: float) -> dict[str, float]:
    """1 + boost * (1 - recall): a class the student always misses weighs 1 + boost."""
    return {c: 1.0 + boost * (1.0 - r) for c, r in recalls.items()}


def weigh(
    curriculum: pl.DataFrame,
    recalls: Mapping[str, float],
    boost: float,
    feedback_weight: float,
) -> pl.DataFrame:
    """Adds `weight`, normalised to mean 1 so the learning rate keeps its meaning."""
    per_class = class_weights(recalls, boost)
    raw = pl.col("severity").replace_strict(per_class, default=1.0, return_dtype=pl.Float64) * (
        pl.when(pl.col("origin") == "feedback").then(feedback_weight).otherwise(1.0)
    )
    weighted = curriculum.with_columns(weight=raw)
    mean = weighted["weight"].mean() or 1.0
    return weighted.with_columns(weight=pl.col("weight") / mean)
