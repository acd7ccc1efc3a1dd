"""Protects per-run settings: launchpad overrides of teacher, student and training settings reach
the teacher's retry loop, the student's batches and the trainer (one prod cycle, stub endpoint)."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from tests.conftest import TINY_OVERRIDES
from tests.support.flywheel_runner import latest_metadata

FAST_TEACHER = ["teacher.request_timeout_s=0.5", "teacher.backoff_base_s=0.01"]
RUN_OVERRIDES = [
    "teacher.max_retries=0",
    "student.batch_size=3",
    "training.learning_rate=0.0123",
]


@pytest.fixture(scope="module")
def overridden_cycle(tmp_path_factory, cache_dir, teacher_endpoint):
    """Definitions built with the defaults for the three settings; the run overrides them."""
    home = tmp_path_factory.mktemp("override-home")
    env = {"FLYWHEEL_ENV": "prod", "FLYWHEEL_CACHE": str(cache_dir), "OPENAI_MODEL": "stub"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_BASE_URL", teacher_endpoint.url)
        mp.setenv("OPENAI_API_KEY", "test-key")
        defs = build_definitions(env=env, home=home, overrides=[*TINY_OVERRIDES, *FAST_TEACHER])
        settings = defs.resources["flywheel_config"].settings()
        assert settings.teacher.max_retries == 4 and settings.student.batch_size == 8
        instance = dg.DagsterInstance.ephemeral()
        assert defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance).success
        instance.add_dynamic_partitions(cycles.name, ["c1"])
        teacher_endpoint.reset({"exam": ["server_error"]})
        overrides = [*TINY_OVERRIDES, *FAST_TEACHER, *RUN_OVERRIDES]
        result = defs.resolve_job_def("flywheel_cycle").execute_in_process(
            partition_key="c1",
            instance=instance,
            run_config={"resources": {"flywheel_config": {"config": {"overrides": overrides}}}},
        )
    assert result.success
    return defs, instance


def test_teacher_max_retries_reaches_the_retry_loop(overridden_cycle):
    """max_retries=0: the exam call that met a 500 fails at once instead of being retried (the
    default of 4 would have retried it); the exam keeps the other call's questions."""
    _, instance = overridden_cycle
    exam = latest_metadata(instance, "exam", "c1")
    assert exam["teacher_retries"] == 0
    assert exam["teacher_failed_calls"] == 1


def test_student_batch_size_reaches_the_student(overridden_cycle):
    _, instance = overridden_cycle
    assert latest_metadata(instance, "student_answers", "c1")["student_batch_size"] == 3


def test_training_learning_rate_reaches_the_trainer(overridden_cycle):
    defs, instance = overridden_cycle
    assert latest_metadata(instance, "lora_adapter", "c1")["learning_rate"] == 0.0123
    job = json.loads(defs.resources["store"].adapter("c1")["config"])
    assert job["learning_rate"] == 0.0123
