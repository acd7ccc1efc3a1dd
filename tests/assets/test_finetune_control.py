"""Protects fine-tune control in the flywheel: subprocess crash resume and the stopping rule."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_assets.external.train_lora import CRASH_ENV
from flywheel_assets.partitions import cycles
from flywheel_core.hashing import sha256_file
from flywheel_core.teaching.stopping import (
    BUDGET_GPU_HOURS,
    BUDGET_STEPS,
    PLATEAU,
    TrainingHistory,
    decide,
    plateaued,
)
from tests.conftest import TINY_OVERRIDES
from tests.support.flywheel_runner import latest_metadata
from tests.support.ports import free_ports

OVERRIDES = [*TINY_OVERRIDES, "training.checkpoint_every=2"]
CRASH_AFTER = 3  # the last checkpoint before the kill is step 2
PLATEAU_NOW = ["training.plateau_cycles=1", "training.plateau_min_gain=1.0"]
STEPS_SPENT = ["training.max_total_steps=6"]
AFTER_TRAINING = ["lora_adapter", "heldout_evaluation", "deployed_student"]


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, key: str, **kwargs):
    return defs.resolve_job_def("flywheel_cycle").execute_in_process(
        partition_key=key, instance=instance, **kwargs
    )


@pytest.fixture(scope="module")
def flywheel(tmp_path_factory, cache_dir):
    """bootstrap: killed mid-training, then re-materialized; cycle-2: plateau; cycle-3: budget."""
    home = tmp_path_factory.mktemp("flywheel-home")
    env = {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}
    defs = build_definitions(env=env, home=home, overrides=OVERRIDES)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance).success
    instance.add_dynamic_partitions(cycles.name, ["bootstrap", "cycle-2", "cycle-3"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CRASH_ENV, str(CRASH_AFTER))
        crashed = _run(defs, instance, "bootstrap", raise_on_error=False)
    resumed = _run(
        defs, instance, "bootstrap", asset_selection=[dg.AssetKey(a) for a in AFTER_TRAINING]
    )
    for key, extra in (("cycle-2", PLATEAU_NOW), ("cycle-3", STEPS_SPENT)):
        later = build_definitions(env=env, home=home, overrides=[*OVERRIDES, *extra])
        assert _run(later, instance, key).success
    return {
        "home": home,
        "store": defs.resources["store"],
        "instance": instance,
        "crashed": crashed,
        "resumed": resumed,
    }


def test_killed_training_subprocess_fails_the_materialization(flywheel):
    crashed = flywheel["crashed"]
    assert not crashed.success
    failures = [e for e in crashed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["lora_adapter"]
    assert "-9" in str(failures[0].event_specific_data.error)  # SIGKILL, not a Python error


def test_rematerializing_resumes_from_the_last_checkpoint(flywheel):
    assert flywheel["resumed"].success
    meta = latest_metadata(flywheel["instance"], "lora_adapter", "bootstrap")
    assert meta["resumed_from_step"] == 2 and meta["steps"] == 6
    row = (
        flywheel["store"]
        .query("SELECT * FROM adapters WHERE cycle = 'bootstrap'")
        .row(0, named=True)
    )
    adapter = Path(row["uri"].removeprefix("file://"))
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "adapter_config.json").is_file()
    curriculum = flywheel["home"] / "work" / "bootstrap" / "curriculum.jsonl"
    assert row["data_version"] == sha256_file(curriculum) == meta["data_version"]
    assert row["device"] == "cpu" and row["base_model"].startswith("tiny-llama")
    assert not any((flywheel["home"] / "work" / "bootstrap" / "checkpoints").glob("*/step-*"))


def test_plateau_skips_the_finetune_and_reuses_the_adapter(flywheel):
    meta = latest_metadata(flywheel["instance"], "lora_adapter", "cycle-2")
    assert meta["finetune_skipped_reason"] == PLATEAU and meta["steps"] == 0
    assert meta["reused_adapter_from_cycle"] == "bootstrap"
    rows = flywheel["store"].query("SELECT * FROM adapters ORDER BY created_at")
    by_cycle = {r["cycle"]: r for r in rows.iter_rows(named=True)}
    assert by_cycle["cycle-2"]["adapter_sha256"] == by_cycle["bootstrap"]["adapter_sha256"]
    heldout = latest_metadata(flywheel["instance"], "heldout_evaluation", "cycle-2")
    assert heldout["finetune_skipped_reason"] == PLATEAU


def test_spent_step_budget_skips_the_finetune(flywheel):
    meta = latest_metadata(flywheel["instance"], "lora_adapter", "cycle-3")
    assert meta["finetune_skipped_reason"] == BUDGET_STEPS
    assert "6 steps trained" in meta["finetune_skipped_detail"]


def test_skipped_cycles_publish_no_new_version(flywheel):
    deployments = flywheel["store"].query("SELECT cycle, model_version FROM deployments")
    assert deployments.rows() == [("bootstrap", 1)]
    for cycle in ("cycle-2", "cycle-3"):
        meta = latest_metadata(flywheel["instance"], "deployed_student", cycle)
        assert meta["deployed"] is False and meta["model_version"] == 1


def test_a_failed_upload_keeps_the_checkpoints_and_the_retry_resumes(
    flywheel, cache_dir, monkeypatch
):
    """The adapter trains, the artifact store (S3, down) refuses it: the checkpoints stay, so
    the retry resumes from the last one instead of step 0. Its own instance: the module's
    metadata stays as the other tests read it (the adapter is the same bytes)."""
    home, adapter = flywheel["home"], [dg.AssetKey("lora_adapter")]
    checkpoints = home / "work" / "bootstrap" / "checkpoints"
    credentials = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)  # read through dg.EnvVar at run time
    (port,) = free_ports(1)  # nothing listens there
    s3_down = {
        "FLYWHEEL_ENV": "local",
        "FLYWHEEL_CACHE": str(cache_dir),
        "FLYWHEEL_STORAGE": "s3",
        "FLYWHEEL_S3_BUCKET": "flywheel-test",
        "FLYWHEEL_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_REGION": "us-east-1",
        **credentials,
    }
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cycles.name, ["bootstrap"])
    defs = build_definitions(env=s3_down, home=home, overrides=OVERRIDES)
    failed = _run(defs, instance, "bootstrap", asset_selection=adapter, raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "connect" in str(failure.event_specific_data.error).lower()
    kept = [int(p.name.removeprefix("step-")) for p in checkpoints.glob("*/step-*")]
    assert kept == [4]  # 6 steps, a checkpoint every 2 (none after the last step)

    local = {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}
    defs = build_definitions(env=local, home=home, overrides=OVERRIDES)
    assert _run(defs, instance, "bootstrap", asset_selection=adapter).success
    meta = latest_metadata(instance, "lora_adapter", "bootstrap")
    assert meta["resumed_from_step"] == 4 and meta["steps"] == 6
    assert not any(checkpoints.glob("*/step-*"))  # cleared once the adapter is stored


def test_plateau_rule() -> None:
    assert not plateaued([0.3, 0.5], 3, 0.02)  # too few fine-tunes to judge
    assert plateaued([0.3, 0.5, 0.51, 0.505, 0.5], 3, 0.02)
    assert not plateaued([0.3, 0.5, 0.51, 0.53, 0.5], 3, 0.02)


def test_budget_rules_come_first_and_the_last_cycle_gets_the_steps_left() -> None:
    flat = TrainingHistory(accuracies=[0.3, 0.3, 0.3], steps=100, gpu_seconds=7200.0)
    assert decide(flat, 60, 1, 0.02, max_total_steps=100).reason == BUDGET_STEPS
    assert decide(flat, 60, 1, 0.02, max_gpu_hours=2.0).reason == BUDGET_GPU_HOURS
    assert decide(flat, 60, 1, 0.02, max_gpu_hours=3.0).reason == PLATEAU
    going = decide(flat, 60, None, 0.02, max_total_steps=130, max_gpu_hours=3.0)
    assert going.reason is None and going.max_steps == 30
