"""The deployment gate's decision: is a candidate adapter worse than the deployed model?

It compares two held-out reports - `incoming` (the deployed model; the base model in the first
cycle) and `candidate` (the new adapter), scored on the same fixed held-out split - and fails
when the candidate's accuracy drops by more than the configured tolerance, or a class the
deployed model recalled drops to zero recall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel_core.reporting.markdown import table
from flywheel_core.settings import GateSettings
from flywheel_core.severity import SEVERITIES


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


def recall_table(incoming: dict, candidate: dict) -> str:
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
