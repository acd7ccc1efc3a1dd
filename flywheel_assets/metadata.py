"""Metadata an asset reports: teacher usage, and progress logging for long student work."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from flywheel_core.domain import TeacherUsage


def teacher_metadata(usage: TeacherUsage | None, quarantined: int) -> dict:
    """Calls, cache hits/misses, tokens, cost (asset and cycle), retries, redactions, budget."""
    if usage is None:
        return {"teacher_calls": 0, "teacher_quarantined": quarantined}
    return {
        "teacher_calls": usage.calls,
        "teacher_cache_hits": usage.cache_hits,
        "teacher_cache_misses": usage.cache_misses,
        "teacher_failed_calls": usage.failed_calls,
        "teacher_skipped_calls": usage.skipped_calls,
        "teacher_retries": usage.retries,
        "teacher_prompt_tokens": usage.prompt_tokens,
        "teacher_completion_tokens": usage.completion_tokens,
        "teacher_cost_usd": round(usage.cost_usd, 6),
        "cycle_teacher_cost_usd": round(usage.cycle_cost_usd, 6),
        "cycle_teacher_tokens": usage.cycle_tokens,
        "teacher_output_modes": dg.MetadataValue.json(usage.output_modes),
        "teacher_repairs": dg.MetadataValue.json(usage.repairs),
        "teacher_redactions": dg.MetadataValue.json(usage.redactions),
        "teacher_redactions_total": sum(usage.redactions.values()),
        "teacher_budget_stop": usage.budget_stop or "not reached",
        "teacher_quarantined": quarantined,
    }


def progress_logger(context: dg.AssetExecutionContext, what: str) -> Callable[[int, int], None]:
    """A callback that logs scoring progress about every 10%."""
    marks: set[int] = set()

    def on_progress(done: int, total: int) -> None:
        mark = done * 10 // max(total, 1)
        if mark not in marks:
            marks.add(mark)
            context.log.info(f"{what}: {done}/{total}")

    return on_progress


def log_teacher(context: dg.AssetExecutionContext, usage: TeacherUsage | None, what: str) -> None:
    """Warn when the teacher's budget cut its work short."""
    if usage and usage.budget_stop:
        context.log.warning(f"teacher budget: {usage.budget_stop}; {what} is partial")
