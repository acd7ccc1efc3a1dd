"""Protects the deployment gate's decision: worse or collapsed candidates are blocked."""

from __future__ import annotations

from flywheel_core.settings import GateSettings
from flywheel_core.teaching.gate import judge


def report(
    accuracy: float,
    recalls: dict[str, float],
    support: int = 6,
    precisions: dict[str, float] | None = None,
) -> dict:
    precisions = precisions or recalls
    per_class = {
        c: {"recall": r, "precision": precisions[c], "support": support} for c, r in recalls.items()
    }
    return {"accuracy": accuracy, "per_class": per_class}


BALANCED = {"critical": 0.5, "major": 0.5, "minor": 0.5, "trivial": 0.5}


def test_gate_passes_an_equal_or_better_candidate():
    """Equal accuracy is not worse: the default tolerance is zero, not negative."""
    assert judge(report(0.5, BALANCED), report(0.5, BALANCED), GateSettings()).passed
    assert judge(report(0.5, BALANCED), report(0.6, BALANCED), GateSettings()).passed


def test_gate_blocks_lower_accuracy_beyond_the_tolerance():
    """A drop larger than max_accuracy_drop blocks; a drop within it passes."""
    verdict = judge(report(0.6, BALANCED), report(0.5, BALANCED), GateSettings())
    assert not verdict.passed and "accuracy drops" in verdict.reasons[0]
    loose = GateSettings(max_accuracy_drop=0.15)
    assert judge(report(0.6, BALANCED), report(0.5, BALANCED), loose).passed


def test_gate_blocks_a_class_collapsing_to_zero_recall():
    """Better accuracy does not excuse a class the deployed model found and the candidate lost."""
    collapsed = {**BALANCED, "minor": 0.0}
    verdict = judge(report(0.5, BALANCED), report(0.7, collapsed), GateSettings())
    assert not verdict.passed and verdict.collapsed == ["minor"]
    assert judge(
        report(0.5, BALANCED), report(0.7, collapsed), GateSettings(block_recall_collapse=False)
    ).passed


def test_gate_first_cycle_vs_a_base_model_that_answers_one_class():
    """Against a base model that only says 'critical', zero recall elsewhere is no collapse."""
    only_critical = {"critical": 1.0, "major": 0.0, "minor": 0.0, "trivial": 0.0}
    base = report(0.25, only_critical, precisions={**only_critical, "critical": 0.25})
    candidate = report(0.4, {"critical": 0.6, "major": 0.5, "minor": 0.0, "trivial": 0.5})
    assert judge(base, candidate, GateSettings()).passed
    # It recalled 'critical' only by answering it for everything: losing it is no collapse.
    no_critical = report(0.4, {"critical": 0.0, "major": 1.0, "minor": 0.1, "trivial": 0.0})
    assert judge(base, no_critical, GateSettings()).passed
