"""Protects the feedback sensor: safe keys, content never counted twice, skips that explain."""

from __future__ import annotations

import re

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flywheel_assets.definitions import build_definitions
from flywheel_assets.jobs import WHEEL_TAG
from flywheel_assets.partitions import cycles
from flywheel_assets.sensors import feedback_sensor, plan_tick
from flywheel_core.feedback.batches import batch_key
from resources.feedback_landing import LandedFile, LocalFeedbackLanding
from tests.support.feedback_files import drop, feedback_jsonl

SAFE = re.compile(r"^[a-z0-9_.-]{1,53}$")


@given(st.text(max_size=300), st.text("0123456789abcdef", min_size=64, max_size=64))
def test_batch_keys_are_safe(name, sha):
    key = batch_key(name, sha)
    assert SAFE.match(key) and ".." not in key and "/" not in key
    assert key.endswith(sha[:12])


def test_batch_key_examples():
    sha = "ab" * 32
    assert batch_key("team-a/Week 12 (final).JSONL", sha) == "week-12-final-abababababab"
    assert batch_key("../../etc/passwd.csv", sha) == "passwd-abababababab"
    assert batch_key("....jsonl", sha) == "batch-abababababab"


@pytest.fixture()
def defs(tmp_path, cache_dir) -> dg.Definitions:
    env = {"FLYWHEEL_CACHE": str(cache_dir)}
    return build_definitions(env=env, home=tmp_path, overrides=["student.base_model=tiny-llama"])


def tick(defs, instance, cursor=None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources
    ) as context:
        result = feedback_sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(cycles.name, list(request.partition_keys))
        return result, result.cursor
    return result, context.cursor


def launch_as_the_daemon_would(defs, instance, request: dg.RunRequest):
    """The sensor's run request, as a run of the job the sensor targets, with its tags."""
    job = defs.resolve_job_def(defs.resolve_sensor_def("feedback_sensor").job_name)
    return job.execute_in_process(
        partition_key=request.partition_key,
        asset_selection=request.asset_selection,
        tags=request.tags,
        instance=instance,
    )


def test_changed_file_is_a_new_cycle_and_unchanged_content_is_not(defs, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    landing = tmp_path / "feedback"
    drop(landing, "a.jsonl", feedback_jsonl("v1"))
    drop(landing, ".partial.jsonl", b"{")  # hidden files are uploads in progress
    drop(landing, "notes.txt", b"not feedback")
    first, cursor = tick(defs, instance)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.asset_selection == [dg.AssetKey("reviewer_feedback")]
    assert request.tags["flywheel/feedback_file"] == "a.jsonl"
    run = launch_as_the_daemon_would(defs, instance, request)
    assert run.success and run.dagster_run.job_name == "flywheel_cycle"  # not __ASSET_JOB
    assert run.dagster_run.tags["dagster/partition"] == request.partition_key
    assert WHEEL_TAG in run.dagster_run.tags  # queued with the flywheel's other cycle runs

    drop(landing, "a.jsonl", feedback_jsonl("v2"))
    second, cursor = tick(defs, instance, cursor)
    assert len(second.run_requests) == 1
    assert second.run_requests[0].partition_key != request.partition_key

    drop(landing, "b.jsonl", feedback_jsonl("v1"))  # v1's content under another name
    drop(landing, "empty.jsonl", b"")
    skip, cursor = tick(defs, instance, cursor)
    assert isinstance(skip, dg.SkipReason)
    assert f"b.jsonl: same content as cycle {request.partition_key}" in skip.skip_message
    assert "empty.jsonl: empty file" in skip.skip_message
    stored = defs.resources["store"].query("SELECT cycle, file_name FROM feedback_batches")
    assert stored.height == 2


def test_an_entirely_invalid_batch_is_quarantined_with_its_reason_on_the_asset(defs, tmp_path):
    """Not a failed (red) partition with the reason in a run log: no materialization, nothing
    downstream, and an observation of the partition that says why."""
    instance = dg.DagsterInstance.ephemeral()
    drop(tmp_path / "feedback", "bad.jsonl", b'{"code": 1}\nnot json\n')
    result, _ = tick(defs, instance)
    key = result.run_requests[0].partition_key
    run = defs.resolve_job_def("flywheel_cycle").execute_in_process(
        partition_key=key,
        instance=instance,
        asset_selection=[dg.AssetKey("reviewer_feedback"), dg.AssetKey("exam")],
    )
    assert run.success
    assert run.asset_materializations_for_node("reviewer_feedback") == []
    assert "exam" in {e.step_key for e in run.all_events if e.event_type_value == "STEP_SKIPPED"}
    (observation,) = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("reviewer_feedback"), asset_partitions=[key]),
        limit=10,
    ).records
    meta = {k: getattr(v, "value", v) for k, v in observation.asset_observation.metadata.items()}
    assert meta["batch_status"] == "quarantined"
    reason = meta["quarantine_reason"]
    assert "bad.jsonl" in reason and "line 1:" in reason and "line 2:" in reason
    assert (meta["received"], meta["accepted"], meta["quarantined"]) == (2, 0, 2)
    quarantined = defs.resources["store"].query("SELECT line_no FROM feedback_quarantine")
    assert sorted(quarantined["line_no"]) == [1, 2]


def test_a_vanished_file_is_retried_not_marked_seen(tmp_path):
    landing = LocalFeedbackLanding(directory=str(tmp_path))
    gone = LandedFile(name="gone.jsonl", size=10, mtime=1.0)
    plan = plan_tick([gone], {}, landing, known={})
    assert not plan.new and "gone.jsonl: unreadable" in plan.skipped[0]
    assert "gone.jsonl" not in plan.seen


def test_a_hidden_feedback_file_is_skipped_with_its_reason(tmp_path):
    landing = LocalFeedbackLanding(directory=str(tmp_path))
    drop(tmp_path, "..x..jsonl", feedback_jsonl("hidden"))
    files = landing.list_files()
    assert [f.name for f in files] == ["..x..jsonl"]
    plan = plan_tick(files, {}, landing, known={})
    assert not plan.new and len(plan.skipped) == 1
    assert plan.skipped[0].startswith("..x..jsonl: hidden file")
    assert "..x..jsonl" in plan.seen  # not read again until it changes
