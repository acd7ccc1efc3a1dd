"""reviewer_feedback: the cycle's batch of reviewer verdicts, validated row by row.

A batch that can never turn the wheel (every row rejected, or its file changed after it landed)
is quarantined, not failed: the partition is left unmaterialized (so nothing downstream runs and
the automation requests nothing), and an observation of it says why (`batch_status`,
`quarantine_reason`), on the asset's page instead of a red partition with the reason in a run
log. The rejected rows are in the `feedback_quarantine` table. A file that cannot be read now
(storage down) is still a failure: a retry may succeed.
"""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from flywheel_assets.partitions import cycles
from flywheel_core.feedback.holdout import is_held_out
from flywheel_core.feedback.validation import Rules, ValidatedBatch, validate_batch
from flywheel_core.hashing import sha256_bytes
from resources.config import FlywheelConfig
from resources.feedback_landing import FeedbackLanding
from resources.lineage.feedback import batch_row
from resources.lineage.store import LineageStore

VERSION = "3"  # a valid batch stores and reports the same as before the quarantine
QUARANTINED = "quarantined"


class QuarantinedBatch(Exception):
    """The batch can never be a cycle; the message says why."""


def read_batch(
    cycle: str, store: LineageStore, landing: FeedbackLanding
) -> tuple[dict, bytes | None]:
    """The cycle's batch record and file bytes (none for a bootstrap / seed-only cycle)."""
    record = store.lookup_batch(cycle)
    if record is None or record["file_name"] is None:
        name = landing.legacy_batch(cycle)
        if name is None:
            return batch_row(cycle, None, None, None), None
        data = landing.read_bytes(name)
        file = next(f for f in landing.list_files() if f.name == name)
        return batch_row(cycle, file, landing.uri(name), sha256_bytes(data)), data
    data = landing.read_bytes(record["file_name"])
    if record["sha256"] and sha256_bytes(data) != record["sha256"]:
        raise QuarantinedBatch(
            f"{record['uri']} changed since it landed as cycle {cycle} (sha256 "
            f"{record['sha256'][:12]}...); its new content is a cycle of its own"
        )
    return record, data


def accepted_frame(
    cycle: str, uri: str | None, batch: ValidatedBatch, heldout_share: float
) -> pl.DataFrame:
    rows = [
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
            "source_file": uri,
            "heldout": is_held_out(row["content_sha256"], heldout_share),
            "asset_version": VERSION,
        }
        for row in batch.accepted
    ]
    return pl.DataFrame(rows, schema_overrides={"explanation": pl.String, "author": pl.String})


def quarantine_frame(cycle: str, uri: str | None, batch: ValidatedBatch) -> pl.DataFrame:
    rows = [
        {**row, "cycle": cycle, "source_file": uri, "asset_version": VERSION}
        for row in batch.quarantined
    ]
    return pl.DataFrame(rows)


def quarantine_if_all_rejected(uri: str | None, batch: ValidatedBatch) -> None:
    if batch.received and not batch.accepted:
        shown = "; ".join(f"line {r['line_no']}: {r['reason']}" for r in batch.quarantined[:10])
        more = f" (+{len(batch.quarantined) - 10} more)" if len(batch.quarantined) > 10 else ""
        raise QuarantinedBatch(
            f"every row of {uri} was rejected ({batch.received} rows): {shown}{more}; "
            "the rows are in the feedback_quarantine table"
        )


@dg.asset(
    partitions_def=cycles,
    group_name="flywheel",
    code_version=VERSION,
    output_required=False,  # a quarantined batch: no materialization, nothing downstream
)
def reviewer_feedback(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    feedback_landing: FeedbackLanding,
    flywheel_config: FlywheelConfig,
) -> Iterator[dg.MaterializeResult]:
    """Accepted and quarantined reviewer-feedback rows of the cycle (none for a bootstrap cycle)."""
    try:
        result = ingest(context, store, feedback_landing, flywheel_config)
    except QuarantinedBatch as exc:
        context.log.warning(f"cycle {context.partition_key} quarantined: {exc}")
        context.log_event(quarantine_observation(context, store, str(exc)))
        return
    yield result


def quarantine_observation(
    context: dg.AssetExecutionContext, store: LineageStore, reason: str
) -> dg.AssetObservation:
    """What the asset's page shows for a quarantined batch: its status, why, and its counts."""
    record = store.lookup_batch(context.partition_key) or {}
    counts = store.batch_counts(context.partition_key)
    received, accepted, quarantined = counts if counts else (0, 0, 0)
    return dg.AssetObservation(
        asset_key=context.asset_key,
        partition=context.partition_key,
        description=f"Quarantined: {reason}",
        metadata={
            "batch_status": QUARANTINED,
            "quarantine_reason": reason,
            "batch_file": record.get("uri") or "unknown",
            "received": dg.MetadataValue.int(received),
            "accepted": dg.MetadataValue.int(accepted),
            "quarantined": dg.MetadataValue.int(quarantined),
        },
    )


def ingest(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    feedback_landing: FeedbackLanding,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """Validate and store the batch; raises QuarantinedBatch for one that can never be a cycle."""
    cycle = context.partition_key
    seq = store.register_cycle(cycle)
    record, data = read_batch(cycle, store, feedback_landing)
    uri = record["uri"]
    settings = flywheel_config.settings().feedback
    rules = Rules(max_code_bytes=settings.max_code_bytes, known_hashes=store.earlier_hashes(cycle))
    batch = validate_batch(data, record["file_name"], rules) if data else ValidatedBatch()
    accepted = accepted_frame(cycle, uri, batch, settings.heldout_share)
    store.replace_rows("feedback", accepted, cycle=cycle)
    store.replace_rows("feedback_quarantine", quarantine_frame(cycle, uri, batch), cycle=cycle)
    counts = {
        "received": batch.received,
        "accepted": len(batch.accepted),
        "quarantined": len(batch.quarantined),
    }
    store.replace_rows(
        "feedback_batches",
        pl.DataFrame([{**record, **counts, "asset_version": VERSION}]),
        cycle=cycle,
    )
    quarantine_if_all_rejected(uri, batch)
    for row in batch.quarantined[:50]:
        context.log.warning(f"{uri}:{row['line_no']} quarantined: {row['reason']}")
    return dg.MaterializeResult(
        metadata={
            "cycle_seq": seq,
            "batch_file": uri or "none (bootstrap / seed-only cycle)",
            "batch_sha256": record["sha256"] or "none",
            **counts,
            # accepted rows kept out of training for the reviewers' held-out set
            "held_out_for_evaluation": int(accepted["heldout"].sum()) if accepted.height else 0,
            "heldout_share": settings.heldout_share,
        }
    )
