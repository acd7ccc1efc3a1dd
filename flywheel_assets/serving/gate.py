"""The deployment gate: a blocking check that keeps a worse adapter away from Triton.

It reads the two `heldout_results` rows `heldout_evaluation` wrote for the cycle - `incoming`
(the deployed model; the base model in the first cycle) and `candidate` (the new adapter),
scored on the same fixed held-out split - and fails when the candidate's accuracy drops by
more than the configured tolerance, or a class the deployed model recalled drops to zero
recall. A failed blocking check stops `deployed_student` in the same run.
"""

import json
from dataclasses import dataclass, field

import dagster as dg

from flywheel_assets.assets.heldout import heldout_evaluation
from flywheel_assets.markdown import table
from flywheel_assets.partitions import cycles
from flywheel_assets.settings import GateSettings
from flywheel_assets.severity import SEVERITIES
from resources.flywheel_config import FlywheelConfig
from resources.lineage_store import LineageStore


@dataclass
class GateVerdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    accuracy_delta: float = 0.0
    collapsed: list[str] = field(default_factory=list)


DEGENERATE_SHARE = 0.9


def answer_shares(per_class: dict) -> dict[str, float]:
    """Share of all answers that went to each severity (from precision, recall and support)."""
    answered = {}
    for c in SEVERITIES:
        v = per_class[c]
        hits = v["recall"] * v["support"]
        answered[c] = hits / v["precision"] if v["precision"] else 0.0
    total = sum(v["support"] for v in per_class.values()) or 1
    return {c: n / total for c, n in answered.items()}


def collapsed_classes(incoming: dict, candidate: dict) -> list[str]:
    """Classes with support that the deployed model recalled and the candidate never finds.

    A deployed model that gives one answer to (nearly) everything - the base model answering
    "critical" - recalls that class by default, not by skill: it has no class to lose.
    """
    if max(answer_shares(incoming).values()) >= DEGENERATE_SHARE:
        return []
    return [
        c
        for c in SEVERITIES
        if candidate[c]["support"] and incoming[c]["recall"] > 0 and candidate[c]["recall"] == 0
    ]


def judge(incoming: dict, candidate: dict, settings: GateSettings) -> GateVerdict:
    """Compare two held-out reports (`accuracy`, `per_class`) under the gate's settings."""
    delta = candidate["accuracy"] - incoming["accuracy"]
    reasons = []
    if delta < -settings.max_accuracy_drop - 1e-12:
        reasons.append(
            f"held-out accuracy drops {incoming['accuracy']:.1%} -> {candidate['accuracy']:.1%} "
            f"(tolerance {settings.max_accuracy_drop:.1%})"
        )
    collapsed = collapsed_classes(incoming["per_class"], candidate["per_class"])
    if collapsed and settings.block_recall_collapse:
        reasons.append(f"recall collapses to 0 for: {', '.join(collapsed)}")
    return GateVerdict(not reasons, reasons, delta, collapsed)


def _reports(store: LineageStore, cycle: str) -> dict[str, dict]:
    rows = store.query(
        "SELECT role, model_ref, accuracy, per_class FROM heldout_results WHERE cycle = ?", [cycle]
    )
    reports = {}
    for row in rows.iter_rows(named=True):
        reports[row["role"]] = {**row, "per_class": json.loads(row["per_class"])}
    return reports


def _recall_table(incoming: dict, candidate: dict) -> str:
    rows = [
        (
            c,
            candidate["per_class"][c]["support"],
            f"{incoming['per_class'][c]['recall']:.2f}",
            f"{candidate['per_class'][c]['recall']:.2f}",
        )
        for c in SEVERITIES
    ]
    return table(["severity", "support", "deployed recall", "candidate recall"], rows)


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
    reports = _reports(store, cycle)
    if {"incoming", "candidate"} - set(reports):
        return dg.AssetCheckResult(
            passed=False, description=f"cycle {cycle} has no held-out comparison to gate on"
        )
    incoming, candidate = reports["incoming"], reports["candidate"]
    verdict = judge(incoming, candidate, flywheel_config.settings().gate)
    description = (
        "candidate is not worse than the deployed model"
        if verdict.passed
        else "NOT DEPLOYED: " + "; ".join(verdict.reasons)
    )
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description=description,
        metadata={
            "deployed_model": incoming["model_ref"],
            "candidate_model": candidate["model_ref"],
            "deployed_accuracy": incoming["accuracy"],
            "candidate_accuracy": candidate["accuracy"],
            "accuracy_delta_points": round(100 * verdict.accuracy_delta, 2),
            "collapsed_classes": ", ".join(verdict.collapsed) or "none",
            "verdict": "deploy" if verdict.passed else "blocked: " + "; ".join(verdict.reasons),
            "recall_per_severity": dg.MetadataValue.md(_recall_table(incoming, candidate)),
        },
    )
