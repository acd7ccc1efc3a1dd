"""Sensor-to-first-asset latency, in process: a file lands -> tick -> reviewer_feedback stored.

Baseline in the same run: materializing reviewer_feedback of a hand-added cycle directly (no
sensor). Excludes the daemon's tick interval (30 s minimum_interval_seconds) and run-launch
overhead of a deployment. Run: `python -m benchmarks.sensor_latency [repeats]`.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from flywheel_assets.sensors import feedback_sensor

ASSET = dg.AssetKey("reviewer_feedback")


def batch(tag: str) -> str:
    rows = [
        {"code": f"x = {i}", "review": f"{tag} unused {i}", "severity": "trivial"}
        for i in range(50)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


def materialize(defs, instance, key: str) -> None:
    result = defs.resolve_job_def("flywheel_cycle").execute_in_process(
        partition_key=key, instance=instance, asset_selection=[ASSET]
    )
    assert result.success


def through_sensor(defs, instance, landing: Path, tag: str, cursor: str | None):
    start = time.perf_counter()
    (landing / f"{tag}.jsonl").write_text(batch(tag))
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources
    ) as context:
        result = feedback_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(cycles.name, list(request.partition_keys))
    (run,) = result.run_requests
    materialize(defs, instance, run.partition_key)
    return time.perf_counter() - start, result.cursor


def direct(defs, instance, landing: Path, tag: str) -> float:
    start = time.perf_counter()
    (landing / f"{tag}.jsonl").write_text(batch(tag))
    instance.add_dynamic_partitions(cycles.name, [tag])
    materialize(defs, instance, tag)
    return time.perf_counter() - start


def main(repeats: int = 5) -> None:
    with tempfile.TemporaryDirectory() as home:
        landing = Path(home) / "feedback"
        landing.mkdir()
        defs = build_definitions(env={}, home=home)
        instance = dg.DagsterInstance.ephemeral()
        direct(defs, instance, landing, "warm-up")
        cursor = None
        sensed, plain = [], []
        for i in range(repeats):
            seconds, cursor = through_sensor(defs, instance, landing, f"sensed-{i}", cursor)
            sensed.append(seconds)
            plain.append(direct(defs, instance, landing, f"direct-{i}"))
        s, p = statistics.median(sensed), statistics.median(plain)
        print(f"baseline (direct materialization): {p * 1000:.0f} ms")  # noqa: T201
        print(
            f"file landed -> reviewer_feedback materialized: {s * 1000:.0f} ms "
            f"= {s / p:.2f}x baseline (median of {repeats})"
        )  # noqa: T201


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
