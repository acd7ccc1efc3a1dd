"""What an asset records about its teacher calls: quarantine rows and metadata entries."""

from __future__ import annotations

import dagster as dg
import polars as pl

from resources.lineage_store import LineageStore
from resources.teacher import QuarantinedOutput, TeacherUsage

QUARANTINE_SCHEMA = {
    "cycle": pl.String,
    "asset": pl.String,
    "call_key": pl.String,
    "item_index": pl.Int32,
    "raw": pl.String,
    "reason": pl.String,
    "asset_version": pl.String,
}


def store_quarantine(
    store: LineageStore, cycle: str, asset: str, version: str, rows: list[QuarantinedOutput]
) -> int:
    """Replace the asset's quarantine rows of the cycle (idempotent per cycle and asset)."""
    frame = pl.DataFrame(
        [
            {**q.model_dump(), "cycle": cycle, "asset": asset, "asset_version": version}
            for q in rows
        ],
        schema=QUARANTINE_SCHEMA,
    )
    return store.replace_rows("teacher_quarantine", frame, cycle=cycle, asset=asset)


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
