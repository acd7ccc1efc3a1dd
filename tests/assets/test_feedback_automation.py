"""Protects the wheel turning by itself: new files -> new cycles -> each asset requested once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from flywheel_assets.sensors import feedback_sensor
from tests.conftest import TINY_OVERRIDES
from tests.support.feedback_files import drop, feedback_jsonl

DOWNSTREAM = [
    "exam",
    "student_answers",
    "exam_evaluation",
    "curriculum",
    "lora_adapter",
    "heldout_evaluation",
    "explanation_preference",
    "deployed_student",
]


class Wheel:
    """A definitions + instance pair, with the automation cursor carried from tick to tick."""

    def __init__(self, home: Path, cache_dir: Path) -> None:
        env = {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}
        self.defs = build_definitions(env=env, home=home, overrides=TINY_OVERRIDES)
        self.instance = dg.DagsterInstance.ephemeral()
        self.auto_cursor = None
        self.sensor_cursor = None
        self.requested: Counter[tuple[str, str | None]] = Counter()

    def sensor_tick(self) -> dg.SensorResult | dg.SkipReason:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.sensor_cursor, resources=self.defs.resources
        ) as context:
            result = feedback_sensor(context)
        if isinstance(result, dg.SensorResult):
            self.sensor_cursor = result.cursor
            for request in result.dynamic_partitions_requests:
                self.instance.add_dynamic_partitions(cycles.name, list(request.partition_keys))
        else:
            self.sensor_cursor = context.cursor
        return result

    def automation_tick(self) -> dict[str, set]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.auto_cursor
        )
        self.auto_cursor = result.cursor
        requested = {}
        for entity in result.results:
            if isinstance(entity.key, dg.AssetKey) and result.get_num_requested(entity.key):
                keys = result.get_requested_partitions(entity.key)
                requested[entity.key.to_user_string()] = set(keys)
        for asset, keys in requested.items():
            self.requested.update((asset, k) for k in keys)
        return requested

    def materialize_feedback(self, key: str) -> None:
        job = self.defs.resolve_job_def("flywheel_cycle")
        result = job.execute_in_process(
            partition_key=key,
            instance=self.instance,
            asset_selection=[dg.AssetKey("reviewer_feedback")],
        )
        assert result.success

    def report(self, asset: str, key: str | None) -> None:
        """Stand-in for a run of the requested asset (the graph test runs the real ones)."""
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=asset, partition=key)
        )


def run_downstream(wheel: Wheel, key: str) -> None:
    """One tick plans the whole cycle (one run); 'run' it; then the audit follows."""
    assert wheel.automation_tick() == {asset: {key} for asset in DOWNSTREAM}
    assert wheel.automation_tick() == {}, "a requested (running) cycle is not started twice"
    for asset in DOWNSTREAM:
        wheel.report(asset, key)
    assert wheel.automation_tick() == {"lineage_audit": {None}}
    wheel.report("lineage_audit", None)
    assert wheel.automation_tick() == {}


@pytest.fixture()
def wheel(tmp_path, cache_dir) -> Wheel:
    wheel = Wheel(tmp_path, cache_dir)
    wheel.report("seed_corpus", None)
    return wheel


def test_two_batches_each_turn_the_wheel_once(wheel, tmp_path):
    landing = tmp_path / "feedback"
    assert wheel.automation_tick() == {}  # the first evaluation only sets a baseline
    assert "no .jsonl or .csv" in wheel.sensor_tick().skip_message

    drop(landing, "team-a/Batch 1.jsonl", feedback_jsonl("one"))
    first = wheel.sensor_tick()
    (key1,) = first.dynamic_partitions_requests[0].partition_keys
    assert [r.partition_key for r in first.run_requests] == [key1]
    assert wheel.automation_tick() == {}, "nothing downstream before reviewer_feedback lands"
    wheel.materialize_feedback(key1)
    run_downstream(wheel, key1)
    assert "none new or changed" in wheel.sensor_tick().skip_message

    drop(landing, "batch-2.csv", b"code,review,severity\nx = 1,unused variable,trivial\n")
    drop(landing, "copy-of-batch-1.jsonl", feedback_jsonl("one"))
    second = wheel.sensor_tick()
    (key2,) = second.dynamic_partitions_requests[0].partition_keys
    assert key2 != key1 and key2.startswith("batch-2-")
    wheel.materialize_feedback(key2)
    run_downstream(wheel, key2)

    assert set(wheel.instance.get_dynamic_partitions(cycles.name)) == {key1, key2}
    for key in (key1, key2):
        assert all(wheel.requested[(asset, key)] == 1 for asset in DOWNSTREAM)
    assert sum(wheel.requested.values()) == 2 * (len(DOWNSTREAM) + 1)
    skip = wheel.sensor_tick().skip_message
    assert "none new or changed" in skip
