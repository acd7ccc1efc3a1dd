"""reviewer_feedback: the cycle's batch of reviewer verdicts, validated row by row."""

import dagster as dg
import polars as pl

from flywheel_assets.feedback_validation import validate_jsonl
from flywheel_assets.partitions import cycles
from resources.feedback_landing import FeedbackLanding
from resources.lineage_store import LineageStore

VERSION = "1"


@dg.asset(partitions_def=cycles, group_name="flywheel", code_version=VERSION)
def reviewer_feedback(
    context: dg.AssetExecutionContext, store: LineageStore, feedback_landing: FeedbackLanding
) -> dg.MaterializeResult:
    """Accepted and quarantined reviewer-feedback rows of the cycle (none for a bootstrap cycle)."""
    cycle = context.partition_key
    seq = store.register_cycle(cycle)
    path = feedback_landing.batch_path(cycle)
    batch = validate_jsonl(path.read_bytes()) if path else None
    accepted = pl.DataFrame(
        [
            {
                "cycle": cycle,
                "item_id": f"feedback:{row['content_sha256'][:16]}",
                "line_no": row["line_no"],
                "code": row["code"],
                "review": row["review"],
                "severity": row["severity"],
                "explanation": row.get("explanation"),
                "author": row.get("author"),
                "content_sha256": row["content_sha256"],
                "source_file": str(path),
                "asset_version": VERSION,
            }
            for row in (batch.accepted if batch else [])
        ],
        schema_overrides={"explanation": pl.String, "author": pl.String},
    )
    quarantined = pl.DataFrame(
        [
            {**row, "cycle": cycle, "source_file": str(path), "asset_version": VERSION}
            for row in (batch.quarantined if batch else [])
        ]
    )
    store.replace_rows("feedback", accepted, cycle=cycle)
    store.replace_rows("feedback_quarantine", quarantined, cycle=cycle)
    received = batch.received if batch else 0
    if batch and received and not batch.accepted:
        lines = ", ".join(str(r["line_no"]) for r in batch.quarantined[:20])
        raise dg.Failure(f"every row of {path} was rejected (lines {lines}); see quarantine")
    for row in batch.quarantined if batch else []:
        context.log.warning(f"{path}:{row['line_no']} quarantined: {row['reason']}")
    return dg.MaterializeResult(
        metadata={
            "cycle_seq": seq,
            "batch_file": str(path) if path else "none (bootstrap / seed-only cycle)",
            "received": received,
            "accepted": accepted.height,
            "quarantined": quarantined.height,
        }
    )
