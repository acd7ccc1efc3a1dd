"""The explanation judge's fixed sample of held-out items, and their reference explanations."""

from __future__ import annotations

import hashlib

import polars as pl

from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.reference_explanations import corpus_reference


def judge_sample(items: pl.DataFrame, size: int) -> pl.DataFrame:
    """``size`` items, as even across severities as the split allows, picked by a hash of the
    item id: the same items every cycle, and not the first ones in any order."""
    ranked = items.with_columns(
        rank=pl.col("item_id").map_elements(
            lambda i: hashlib.sha256(i.encode()).hexdigest(), return_dtype=pl.String
        )
    ).sort("rank")
    per_class = {s: ranked.filter(pl.col("severity") == s) for s in SEVERITIES}
    chosen: list[pl.DataFrame] = []
    depth = 0
    while sum(f.height for f in chosen) < size and depth < items.height:
        for severity in SEVERITIES:
            row = per_class[severity].slice(depth, 1)
            if row.height and sum(f.height for f in chosen) < size:
                chosen.append(row)
        depth += 1
    return pl.concat(chosen).drop("rank").sort("item_id") if chosen else items.head(0)


def sample_references(sample: pl.DataFrame) -> dict[str, str | None]:
    """item_id -> the corpus teacher's reference explanation (None without a documented fix)."""
    return {
        r["item_id"]: corpus_reference(r["severity"], r["code"], r["good_code"], r["details"])
        for r in sample.iter_rows(named=True)
    }
