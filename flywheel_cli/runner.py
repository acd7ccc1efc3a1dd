"""Run flywheel cycles in-process against a Dagster instance (the demo and the benchmarks)."""

from __future__ import annotations

import logging
import time

import dagster as dg

from flywheel_assets.partitions import cycles

log = logging.getLogger("flywheel")

GATE_CHECK = "better_than_deployed"


def demo_cycle_keys(count: int) -> list[str]:
    """`bootstrap`, then seed-only cycles (no reviewer feedback in the embedded defaults)."""
    return ["bootstrap", *(f"seed-{k:02d}" for k in range(2, count + 1))]


def materialization_value(
    instance: dg.DagsterInstance, asset: str, partition: str, key: str
) -> float:
    """A number from the latest materialization of one asset partition (0 when absent)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return 0.0
    entry = records[0].event_log_entry.asset_materialization.metadata.get(key)
    return float(getattr(entry, "value", 0.0) or 0.0)


def gate_blocked(result: dg.ExecuteInProcessResult) -> bool:
    """Whether the run stopped only because the deployment gate failed (a valid outcome)."""
    evaluations = result.get_asset_check_evaluations()
    return any(e.check_name == GATE_CHECK and not e.passed for e in evaluations)


def run_cycles(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[str]) -> list[dict]:
    """Seed corpus, then the flywheel_cycle job per partition key; timings per cycle.

    Raises RuntimeError naming the cycle when a run fails (its events stay in the instance).
    """
    if not defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance).success:
        raise RuntimeError("building the seed corpus failed")
    timings = []
    for key in keys:
        instance.add_dynamic_partitions(cycles.name, [key])
        started = time.perf_counter()
        log.info("cycle %s: running the flywheel_cycle job", key)
        result = defs.resolve_job_def("flywheel_cycle").execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False
        )
        if not result.success:
            if not gate_blocked(result):
                raise RuntimeError(f"cycle {key} failed; its run is in the Dagster UI")
            log.warning("cycle %s: the gate kept the new adapter from deployment", key)
        timings.append(
            {
                "cycle": key,
                "wall": time.perf_counter() - started,
                "training": materialization_value(instance, "lora_adapter", key, "wall_s"),
                "inference": materialization_value(
                    instance, "student_answers", key, "inference_seconds"
                )
                + materialization_value(instance, "heldout_evaluation", key, "inference_seconds")
                + materialization_value(
                    instance, "explanation_preference", key, "generation_seconds"
                ),
            }
        )
    return timings
