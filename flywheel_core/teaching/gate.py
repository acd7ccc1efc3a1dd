"""The deployment gate's decision: is a candidate adapter worse than the model serving now?

Inputs are the held-out comparisons of `heldout_sets.compare_on_set`, one per evaluation set.
The decision rests on the reviewers' held-out feedback once it holds ``min_reviewer_items``
items (what the team cares about), otherwise on the seed split; the seed split then guards
against collapse. A set blocks the candidate when:

- its accuracy drops beyond the noise: the upper end of the paired 95% interval of the
  difference lies below ``-max_accuracy_drop`` (a drop inside the interval is not a regression);
- its answers concentrate on one class far beyond that class's share of the set
  (``max_answer_excess``), unless the serving model's answers already did;
- (decision set only) a class of which the serving model found at least ``min_recalled_items``
  items drops to zero recall (fewer found items is noise on a rare class).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel_core.settings import GateSettings
from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.heldout_sets import REVIEWERS_SET, SEED_SET, concentrated_classes

# A serving model that gives one answer to (nearly) everything - the base model answering
# "critical" - recalls that class by default, not by skill: it has no class to lose.
DEGENERATE_SHARE = 0.9


@dataclass
class GateVerdict:
    passed: bool
    decision_set: str
    reasons: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # one line per set: the numbers judged
    accuracy_delta: float = 0.0  # on the decision set
    collapsed: list[str] = field(default_factory=list)  # zero-recall classes (decision set)
    concentrated: dict[str, list[str]] = field(default_factory=dict)  # set -> classes


def decision_set(comparisons: dict[str, dict], settings: GateSettings) -> str:
    reviewers = comparisons.get(REVIEWERS_SET)
    if reviewers and reviewers["candidate"]["n"] >= settings.min_reviewer_items:
        return REVIEWERS_SET
    return SEED_SET


def collapsed_classes(incoming: dict, candidate: dict, min_recalled: int = 1) -> list[str]:
    """Classes of which the serving model found at least `min_recalled` items and the candidate
    finds none."""
    if max(incoming["answers"].values()) >= DEGENERATE_SHARE:
        return []
    return [
        c
        for c in SEVERITIES
        if candidate["per_class"][c]["support"]
        and round(incoming["per_class"][c]["recall"] * incoming["per_class"][c]["support"])
        >= min_recalled
        and candidate["per_class"][c]["recall"] == 0
    ]


def describe(name: str, comparison: dict) -> str:
    inc, cand = comparison["incoming"], comparison["candidate"]
    return (
        f"{name} ({cand['n']} items): accuracy {inc['accuracy']:.1%} -> {cand['accuracy']:.1%} "
        f"({100 * comparison['delta']:+.1f} points, 95% interval "
        f"{100 * comparison['delta_low']:+.1f}..{100 * comparison['delta_high']:+.1f}), "
        f"macro-F1 {inc['macro_f1']:.3f} -> {cand['macro_f1']:.3f}, "
        f"majority class {cand['majority']:.1%}"
    )


def judge(comparisons: dict[str, dict], settings: GateSettings) -> GateVerdict:
    """Decide on the comparisons of the sets the gate reads (others are reported only)."""
    if SEED_SET not in comparisons:
        raise ValueError("the gate needs the seed held-out split's comparison")
    deciding = decision_set(comparisons, settings)
    judged = [deciding] + [s for s in (SEED_SET,) if s != deciding]
    verdict = GateVerdict(
        passed=True, decision_set=deciding, accuracy_delta=comparisons[deciding]["delta"]
    )
    for name in judged:
        comparison = comparisons[name]
        verdict.summary.append(describe(name, comparison))
        if comparison["delta_high"] < -settings.max_accuracy_drop - 1e-12:
            verdict.reasons.append(
                f"{name} accuracy drops beyond the noise: {describe(name, comparison)} "
                f"(tolerance {settings.max_accuracy_drop:.1%} beyond the interval)"
            )
        concentrated = concentrated_classes(comparison["candidate"], settings.max_answer_excess)
        already = concentrated_classes(comparison["incoming"], settings.max_answer_excess)
        if concentrated and not already:
            verdict.concentrated[name] = concentrated
            shown = ", ".join(
                f"{c} {comparison['candidate']['answers'][c]:.0%} of answers vs "
                f"{comparison['candidate']['class_shares'][c]:.0%} of the set"
                for c in concentrated
            )
            verdict.reasons.append(f"{name}: answers concentrate on one class ({shown})")
    decided = comparisons[deciding]
    verdict.collapsed = collapsed_classes(
        decided["incoming"], decided["candidate"], settings.min_recalled_items
    )
    if verdict.collapsed and settings.block_recall_collapse:
        verdict.reasons.append(
            f"{deciding}: recall collapses to 0 for: {', '.join(verdict.collapsed)}"
        )
    verdict.passed = not verdict.reasons
    return verdict
