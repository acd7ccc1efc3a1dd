"""Protects configuration: defaults validate, overrides apply, mistakes are clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flywheel_core.settings import load_settings


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
