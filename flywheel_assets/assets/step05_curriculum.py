"""curriculum: the previous curriculum + this cycle's new examples and feedback, weighted."""

import dagster as dg
import polars as pl

from flywheel_assets.assets.step01_reviewer_feedback import reviewer_feedback
from flywheel_assets.assets.step04_exam_evaluation import exam_evaluation
from flywheel_assets.partitions import cycle_asset
from flywheel_core.reporting.markdown import table
from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.curriculum_weights import (
    CURRICULUM_COLUMNS,
    curriculum_version,
    explanation_sources,
    merge_curriculum,
)
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore

VERSION = "3"


@cycle_asset(VERSION, deps=[exam_evaluation, reviewer_feedback])
def curriculum(
    context: dg.AssetExecutionContext, store: LineageStore, flywheel_config: FlywheelConfig
) -> dg.MaterializeResult:
    """Training examples accumulated over the cycles, with per-example weights."""
    cycle = context.partition_key
    settings = flywheel_config.settings().curriculum
    prev_cycle, previous = store.previous_curriculum(cycle)
    evaluation = store.evaluation(cycle)
    if evaluation is None:
        raise dg.Failure(f"cycle {cycle} has no evaluation: materialize exam_evaluation first")
    strengths = {c: v["f1"] for c, v in evaluation["per_class"].items()}
    weighted = merge_curriculum(
        previous.select(CURRICULUM_COLUMNS), store.new_curriculum_rows(cycle), strengths, settings
    )
    version = curriculum_version(weighted)
    rows = weighted.with_columns(
        cycle=pl.lit(cycle),
        example_id=pl.lit(f"{cycle}/") + pl.col("item_id"),
        asset_version=pl.lit(VERSION),
    )
    store.replace_rows("curricula", rows, cycle=cycle)
    per_class = [
        (
            c,
            int((weighted["severity"] == c).sum()),
            float(weighted.filter(pl.col("severity") == c)["weight"].mean() or 0.0),
            strengths.get(c, 0.0),
        )
        for c in SEVERITIES
    ]
    added = weighted.height - previous.height
    context.log.info(f"curriculum {version}: {weighted.height} examples (+{added})")
    return dg.MaterializeResult(
        metadata={
            "curriculum_version": version,
            "size": weighted.height,
            "added": added,
            "previous_curriculum_cycle": prev_cycle or "none",
            "previous_size": previous.height,
            "with_explanation": int(weighted["explanation"].is_not_null().sum()),
            "explanation_sources": dg.MetadataValue.json(explanation_sources(weighted)),
            "origins": dg.MetadataValue.json(
                {o: int((weighted["origin"] == o).sum()) for o in ("teacher", "feedback")}
            ),
            "per_severity": dg.MetadataValue.md(
                table(["severity", "examples", "mean weight", "exam F1"], per_class)
            ),
        }
    )
