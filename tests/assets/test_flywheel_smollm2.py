"""Protects the real student path: one flywheel cycle with SmolLM2-135M-Instruct (slow)."""

from __future__ import annotations

import json

import pytest

from flywheel_core.severity import SEVERITIES
from tests.support.flywheel_runner import latest_metadata, run_cycles

pytestmark = pytest.mark.slow

SMOLLM2_OVERRIDES = [
    "student.base_model=smollm2-135m-instruct",
    "student.num_threads=2",
    "student.max_prompt_tokens=192",
    "exam.num_questions=8",
    "curriculum.new_examples_per_cycle=8",
    "training.steps_per_cycle=2",
    "training.max_steps_per_cycle=2",
    "training.batch_size=4",
    "heldout.max_items=8",
]


def test_one_cycle_with_the_real_student(tmp_path, flywheel_env):
    defs, instance = run_cycles(tmp_path, flywheel_env, ["bootstrap"], SMOLLM2_OVERRIDES)
    store = defs.resources["store"]
    answers = store.query("SELECT * FROM answers WHERE cycle = 'bootstrap'")
    assert answers.height == 8 and set(answers["predicted"]) <= set(SEVERITIES)
    assert answers["student"][0].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    adapter = store.query("SELECT * FROM adapters WHERE cycle = 'bootstrap'").row(0, named=True)
    config = json.loads(adapter["config"])
    assert config["max_steps"] == 2 and adapter["steps"] == 2
    meta = latest_metadata(instance, "heldout_evaluation", "bootstrap")
    assert meta["heldout_items"] == 8
    assert 0.0 <= meta["candidate accuracy (%)"] <= 100.0
    deployed = latest_metadata(instance, "deployed_student", "bootstrap")
    assert deployed["adapter_sha256"] == adapter["adapter_sha256"]
