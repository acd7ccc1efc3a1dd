"""The flywheel's stopping rule: no fine-tune once proficiency plateaus or the budget is spent.

Proficiency here is the held-out accuracy (exact, computed by code on the fixed held-out split,
not the teacher's 1-10 grade): the sequence is the accuracy of the model serving before the first
cycle, then each trained adapter's accuracy in cycle order (cycles that skipped fine-tuning add
nothing). It has plateaued when the best of the last ``plateau_cycles`` fine-tunes beats the best
before them by less than ``plateau_min_gain`` (0.02 = 2 accuracy points). The compute budget
counts the steps of every earlier trained adapter (``max_total_steps``; the last cycle gets the
steps left) and their training hours on CUDA (``max_gpu_hours``). Budget rules are checked first.
Once stopped, the rule holds until its settings change (the held-out split does not).
"""

from __future__ import annotations

from pydantic import BaseModel

PLATEAU = "plateau"
BUDGET_STEPS = "budget_steps"
BUDGET_GPU_HOURS = "budget_gpu_hours"


class TrainingHistory(BaseModel):
    """What earlier cycles spent and achieved (see ``lineage.training_history``)."""

    accuracies: list[float]  # serving model before the first cycle, then each trained adapter
    steps: int  # optimiser steps of every earlier trained adapter
    gpu_seconds: float  # their training time on CUDA


class StopDecision(BaseModel):
    """``reason`` None: fine-tune for ``max_steps``; else skip, and ``detail`` says why."""

    reason: str | None
    detail: str
    max_steps: int


def plateaued(accuracies: list[float], cycles: int, min_gain: float) -> bool:
    """True when the last ``cycles`` entries do not beat the best before them by ``min_gain``."""
    if len(accuracies) <= cycles:
        return False
    return max(accuracies[-cycles:]) - max(accuracies[:-cycles]) < min_gain


def decide(
    history: TrainingHistory,
    steps_per_cycle: int,
    plateau_cycles: int | None,
    plateau_min_gain: float,
    max_total_steps: int | None = None,
    max_gpu_hours: float | None = None,
) -> StopDecision:
    """Whether this cycle fine-tunes, and for how many steps."""
    steps = steps_per_cycle
    if max_total_steps is not None:
        left = max_total_steps - history.steps
        if left <= 0:
            detail = f"{history.steps} steps trained, budget max_total_steps={max_total_steps}"
            return StopDecision(reason=BUDGET_STEPS, detail=detail, max_steps=0)
        steps = min(steps, left)
    gpu_hours = history.gpu_seconds / 3600
    if max_gpu_hours is not None and gpu_hours >= max_gpu_hours:
        detail = f"{gpu_hours:.3f} GPU hours trained, budget max_gpu_hours={max_gpu_hours}"
        return StopDecision(reason=BUDGET_GPU_HOURS, detail=detail, max_steps=0)
    if plateau_cycles is not None and plateaued(
        history.accuracies, plateau_cycles, plateau_min_gain
    ):
        recent = ", ".join(f"{a:.3f}" for a in history.accuracies[-plateau_cycles - 1 :])
        detail = (
            f"held-out accuracy gained < {plateau_min_gain} over the last {plateau_cycles} "
            f"fine-tunes ({recent})"
        )
        return StopDecision(reason=PLATEAU, detail=detail, max_steps=0)
    return StopDecision(reason=None, detail=f"fine-tune for {steps} steps", max_steps=steps)
