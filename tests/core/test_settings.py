"""Protects configuration: defaults validate, overrides apply, mistakes are clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flywheel_core.settings import load_settings
from flywheel_core.teaching.step_budget import steps_for_cycle


def test_defaults_and_dotlist_overrides(tmp_path):
    assert load_settings().exam.num_questions == 40
    file = tmp_path / "mine.yaml"
    file.write_text("exam:\n  num_questions: 12\n")
    settings = load_settings(file, ["training.steps_per_cycle=3", "training.layers_to_train=null"])
    assert settings.exam.num_questions == 12
    assert settings.training.steps_per_cycle == 3
    assert settings.training.layers_to_train is None


def test_bad_settings_are_rejected_by_name():
    with pytest.raises(ValidationError, match="num_questions"):
        load_settings(overrides=["exam.num_questions=1"])
    with pytest.raises(ValidationError, match="typo"):
        load_settings(overrides=["exam.typo=1"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_settings(overrides=["no-equals-sign"])


def test_the_tiny_flywheel_of_the_tests_and_the_benchmarks_trains_six_steps():
    from benchmarks import cycle_overhead
    from tests.conftest import TINY_OVERRIDES

    assert cycle_overhead.TINY_OVERRIDES is TINY_OVERRIDES  # one list: no drift
    training = load_settings(overrides=TINY_OVERRIDES).training
    assert steps_for_cycle(1000, 500, training)[0] == 6  # however much new feedback arrives
