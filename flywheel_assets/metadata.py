"""Metadata an asset reports: teacher usage, numbers a person reads at a glance (percentages,
tables), and progress logging for long student work."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg

from flywheel_core.domain import TeacherUsage
from flywheel_core.severity import SEVERITIES


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


def percent(fraction: float) -> dg.FloatMetadataValue:
    """A fraction as a percentage (0.2083 -> 20.83): the key carries the unit, e.g. `(%)`."""
    return dg.MetadataValue.float(round(100 * float(fraction), 2))


def number(value: float, digits: int = 4) -> dg.FloatMetadataValue:
    return dg.MetadataValue.float(round(float(value), digits))


def table_value(header: Sequence[str], rows: Sequence[Sequence[object]]) -> dg.TableMetadataValue:
    """Rows as a Dagster table (sortable in the UI); column types from the first row."""

    def kind(value: object) -> str:
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int):
            return "int"
        return "float" if isinstance(value, float) else "string"

    first = rows[0] if rows else [""] * len(header)
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kind(v)) for name, v in zip(header, first, strict=True)]
    )
    records = [
        dg.TableRecord({name: _cell(v) for name, v in zip(header, row, strict=True)})
        for row in rows
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def _cell(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    return value if isinstance(value, bool | int | str) or value is None else str(value)


def confusion_table(report: dict) -> dg.TableMetadataValue:
    """Rows: the answer key; columns: the student's answer (counts)."""
    rows = [
        (truth, *(int(report["confusion"][truth][p]) for p in SEVERITIES)) for truth in SEVERITIES
    ]
    return table_value(["answer key", *(f"answered {c}" for c in SEVERITIES)], rows)
