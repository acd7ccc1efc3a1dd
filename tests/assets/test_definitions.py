"""Protects the code location: it loads, validates, and stamps settings into code versions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel_assets.definitions import build_definitions

REPO = Path(__file__).resolve().parents[2]


def test_dagster_validates_the_workspace(tmp_path):
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_graph_lists_the_cycle_assets_and_jobs(tmp_path):
    defs = build_definitions(env={}, home=tmp_path)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "seed_corpus",
        "reviewer_feedback",
        "exam",
        "student_answers",
        "exam_evaluation",
        "curriculum",
        "lora_adapter",
        "heldout_evaluation",
        "explanation_preference",
        "deployed_student",
    } <= keys
    assert defs.resolve_job_def("flywheel_cycle").partitions_def.name == "flywheel_cycle"


def _code_versions(tmp_path, overrides):
    defs = build_definitions(env={}, home=tmp_path, overrides=overrides)
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}


def test_a_settings_change_changes_only_the_assets_that_use_it(tmp_path):
    before = _code_versions(tmp_path, [])
    after = _code_versions(tmp_path, ["training.steps_per_cycle=7"])
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"lora_adapter"}


def test_unknown_environment_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="FLYWHEEL_ENV"):
        build_definitions(env={"FLYWHEEL_ENV": "moon"}, home=tmp_path)


def test_prod_swaps_only_the_teacher_and_reads_secrets_through_envvar(tmp_path):
    import dagster as dg

    from resources.teacher.llm import LLMTeacher

    local = build_definitions(env={}, home=tmp_path).resources
    prod = build_definitions(env={"FLYWHEEL_ENV": "prod"}, home=tmp_path).resources
    assert isinstance(prod["teacher"], LLMTeacher)
    assert isinstance(prod["teacher"].api_key, dg.EnvVar)
    assert isinstance(prod["teacher"].base_url, dg.EnvVar)
    assert {k: type(v) for k, v in local.items() if k != "teacher"} == {
        k: type(v) for k, v in prod.items() if k != "teacher"
    }


def test_every_asset_has_an_owner_kinds_and_a_description(tmp_path):
    graph = build_definitions(env={}, home=tmp_path).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == ["team:flywheel"], key
        assert node.kinds and len(node.kinds) <= 3, key
        assert node.description and len(node.description) > 20, key


def test_cycle_runs_and_automation_runs_are_tagged_with_the_flywheel(tmp_path):
    import dagster as dg

    defs = build_definitions(env={}, home=tmp_path)
    job = defs.resolve_job_def("flywheel_cycle")
    assert job.tags["flywheel/wheel"] == str(tmp_path.resolve())
    assert job.executor_def is dg.in_process_executor
    automation = defs.resolve_sensor_def("flywheel_automation")
    assert automation.run_tags["flywheel/wheel"] == str(tmp_path.resolve())
    assert automation.description and "deployed_student" in automation.description


def test_loading_the_code_location_prints_no_dagster_warning(tmp_path):
    """The preview/beta features used on purpose are silenced in one place; nothing else warns."""
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path), "PYTHONWARNINGS": "always"}
    code = "from flywheel_assets.definitions import defs; defs()"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
