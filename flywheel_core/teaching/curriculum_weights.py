"""Per-example weights of a curriculum: weaker severities and reviewer feedback count more."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import polars as pl

from flywheel_core.settings import CurriculumSettings


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
    return weigh(combined, strengths, settings.weak_class_boost, settings.feedback_weight)


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
