"""curriculum: the previous curriculum + this cycle's new examples and feedback, weighted."""

import hashlib

import dagster as dg
import polars as pl

from flywheel_assets import lineage
from flywheel_assets.assets.evaluation import exam_evaluation
from flywheel_assets.assets.feedback import reviewer_feedback
from flywheel_assets.markdown import table
from flywheel_assets.partitions import cycle_asset
from flywheel_assets.severity import SEVERITIES
from flywheel_assets.teaching.curriculum_weights import weigh
from resources.flywheel_config import FlywheelConfig
from resources.lineage_store import LineageStore

VERSION = "3"
COLUMNS = [
    "item_id",
    "origin",
    "added_in_cycle",
    "code",
    "review",
    "severity",
    "explanation",
    "explanation_source",
]


def new_rows(store: LineageStore, cycle: str) -> pl.DataFrame:
    """This cycle's additions: teacher examples and accepted reviewer feedback."""
    return store.query(
        """
        SELECT item_id, 'teacher' AS origin, cycle AS added_in_cycle, code, review, severity,
               explanation, explanation_source
        FROM teacher_examples WHERE cycle = ?
        UNION ALL
        SELECT item_id, 'feedback' AS origin, cycle AS added_in_cycle, code, review, severity,
               explanation, CASE WHEN explanation IS NULL THEN NULL ELSE 'reviewer' END
        FROM feedback WHERE cycle = ?
        """,
        [cycle, cycle],
    )


def curriculum_version(frame: pl.DataFrame) -> str:
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


@cycle_asset(VERSION, deps=[exam_evaluation, reviewer_feedback])
def curriculum(
    context: dg.AssetExecutionContext, store: LineageStore, flywheel_config: FlywheelConfig
) -> dg.MaterializeResult:
    """Training examples accumulated over the cycles, with per-example weights."""
    cycle = context.partition_key
    settings = flywheel_config.settings().curriculum
    prev_cycle, previous = lineage.previous_curriculum(store, cycle)
    evaluation = store.query("SELECT per_class FROM evaluations WHERE cycle = ?", [cycle])
    if evaluation.is_empty():
        raise dg.Failure(f"cycle {cycle} has no evaluation: materialize exam_evaluation first")
    strengths = {
        c: v["f1"] for c, v in pl.Series(evaluation["per_class"]).str.json_decode()[0].items()
    }
    combined = pl.concat([previous.select(COLUMNS), new_rows(store, cycle).select(COLUMNS)])
    combined = combined.unique(subset="item_id", keep="first", maintain_order=True)
    weighted = weigh(combined, strengths, settings.weak_class_boost, settings.feedback_weight)
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
