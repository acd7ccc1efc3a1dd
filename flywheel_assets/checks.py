"""Asset checks: feedback rows are conserved; the gate keeps a worse adapter away from Triton.

A failed blocking `better_than_deployed` check stops `deployed_student` in the same run.
"""

import dagster as dg

from flywheel_assets.assets.step01_reviewer_feedback import reviewer_feedback
from flywheel_assets.assets.step07_heldout_evaluation import heldout_evaluation
from flywheel_assets.metadata import number, percent, table_value
from flywheel_assets.partitions import cycles
from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.gate import judge
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore


@dg.asset_check(
    asset=reviewer_feedback,
    partitions_def=cycles,
    description="accepted + quarantined = received: validation loses no row",
)
def rows_conserved(
    context: dg.AssetCheckExecutionContext, store: LineageStore
) -> dg.AssetCheckResult:
    """Counts the stored rows of the cycle against what the batch file held."""
    cycle = context.partition_key
    counts = store.batch_counts(cycle)
    if counts is None:
        return dg.AssetCheckResult(passed=False, description=f"cycle {cycle} has no batch record")
    received, accepted, quarantined = counts
    return dg.AssetCheckResult(
        passed=accepted + quarantined == received,
        metadata={
            "received": dg.MetadataValue.int(received),
            "accepted": dg.MetadataValue.int(accepted),
            "quarantined": dg.MetadataValue.int(quarantined),
        },
    )


@dg.asset_check(
    asset=heldout_evaluation,
    name="better_than_deployed",
    blocking=True,
    partitions_def=cycles,
    description="The candidate adapter is not worse than the deployed model on the held-out "
    "split (accuracy within tolerance, no class collapsing to zero recall); blocks deployment.",
)
def better_than_deployed(
    context: dg.AssetCheckExecutionContext, store: LineageStore, flywheel_config: FlywheelConfig
) -> dg.AssetCheckResult:
    cycle = context.partition_key if context.has_partition_key else None
    if cycle is None:
        raise dg.Failure("better_than_deployed runs per cycle partition")
    reports = store.heldout_reports(cycle)
    if {"incoming", "candidate"} - set(reports):
        return dg.AssetCheckResult(
            passed=False, description=f"cycle {cycle} has no held-out comparison to gate on"
        )
    # The model serving now: `serving` when a newer deployment than the cycle's incoming model
    # exists (a backfilled old cycle), else the model that served when the cycle started.
    incoming, candidate = reports.get("serving", reports["incoming"]), reports["candidate"]
    gate = flywheel_config.settings().gate
    verdict = judge(incoming, candidate, gate)
    description = (
        f"candidate is not worse than the model serving now ({incoming['model_ref'][:20]}): "
        f"accuracy {100 * verdict.accuracy_delta:+.1f} points, tolerance "
        f"-{100 * gate.max_accuracy_drop:.1f} points"
        if verdict.passed
        else "NOT DEPLOYED: " + "; ".join(verdict.reasons)
    )
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description=description,
        metadata={
            "serving_model": incoming["model_ref"],
            "candidate_model": candidate["model_ref"],
            "serving accuracy (%)": percent(incoming["accuracy"]),
            "candidate accuracy (%)": percent(candidate["accuracy"]),
            "accuracy delta (points)": number(100 * verdict.accuracy_delta, 2),
            "tolerance (points)": number(-100 * gate.max_accuracy_drop, 2),
            "collapsed_classes": ", ".join(verdict.collapsed) or "none",
            "verdict": "deploy" if verdict.passed else "blocked: " + "; ".join(verdict.reasons),
            "recall_per_severity": table_value(
                ["severity", "serving recall", "candidate recall"],
                [
                    (c, incoming["per_class"][c]["recall"], candidate["per_class"][c]["recall"])
                    for c in SEVERITIES
                ],
            ),
        },
    )
