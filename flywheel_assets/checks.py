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
from flywheel_core.teaching.heldout_sets import SEED_SET
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
    description="The candidate adapter is not worse than the serving model: decided on the "
    "reviewers' held-out feedback once it is large enough (else the seed split), with the seed "
    "split as a guard; a drop inside the 95% interval is noise, answers concentrated on one "
    "class or a class collapsing to zero recall block; blocks deployment.",
)
def better_than_deployed(
    context: dg.AssetCheckExecutionContext, store: LineageStore, flywheel_config: FlywheelConfig
) -> dg.AssetCheckResult:
    cycle = context.partition_key if context.has_partition_key else None
    if cycle is None:
        raise dg.Failure("better_than_deployed runs per cycle partition")
    comparisons = store.heldout_comparisons(cycle)
    if SEED_SET not in comparisons:
        return dg.AssetCheckResult(
            passed=False, description=f"cycle {cycle} has no held-out comparison to gate on"
        )
    settings = flywheel_config.settings().gate
    verdict = judge(comparisons, settings)
    decided = comparisons[verdict.decision_set]
    tolerance = f"tolerance: the 95% interval + {settings.max_accuracy_drop:.1%}"
    description = (
        f"deploy: not worse than the model serving now ({decided['incoming']['model_ref'][:20]}) "
        f"on {verdict.decision_set} ({tolerance}). "
        if verdict.passed
        else "NOT DEPLOYED: " + "; ".join(verdict.reasons) + ". "
    ) + " | ".join(verdict.summary)
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description=description,
        metadata={
            "decision_set": verdict.decision_set,
            "decision set items": dg.MetadataValue.int(decided["candidate"]["n"]),
            "serving_model": decided["incoming"]["model_ref"],
            "candidate_model": decided["candidate"]["model_ref"],
            "serving accuracy (%)": percent(decided["incoming"]["accuracy"]),
            "candidate accuracy (%)": percent(decided["candidate"]["accuracy"]),
            "accuracy delta (points)": number(100 * verdict.accuracy_delta, 2),
            "accuracy delta 95% interval (points)": f"{100 * decided['delta_low']:+.1f}.."
            f"{100 * decided['delta_high']:+.1f}",
            "tolerance beyond the interval (points)": number(-100 * settings.max_accuracy_drop, 2),
            "collapsed_classes": ", ".join(verdict.collapsed) or "none",
            "concentrated_answers": dg.MetadataValue.json(verdict.concentrated),
            "verdict": "deploy" if verdict.passed else "blocked: " + "; ".join(verdict.reasons),
            "sets_judged": dg.MetadataValue.md("\n".join(f"- {line}" for line in verdict.summary)),
            "recall_per_severity": table_value(
                [
                    "severity",
                    "support",
                    "serving recall",
                    "candidate recall",
                    "serving answers (%)",
                    "candidate answers (%)",
                ],
                [
                    (
                        c,
                        decided["candidate"]["per_class"][c]["support"],
                        round(decided["incoming"]["per_class"][c]["recall"], 3),
                        round(decided["candidate"]["per_class"][c]["recall"], 3),
                        round(100 * decided["incoming"]["answers"][c], 1),
                        round(100 * decided["candidate"]["answers"][c], 1),
                    )
                    for c in SEVERITIES
                ],
            ),
        },
    )
