"""The student resource: where base models are cached; the run's settings pick the model."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from flywheel_core.ml.student import Student
from flywheel_core.settings import StudentSettings


class StudentModel(dg.ConfigurableResource):
    """Runs the student in-process (CPU). The model, batch size, prompt length, threads and
    dtype come from the run's `student` settings, so a per-run override reaches them."""

    cache_dir: str  # converted base models (SmolLM2 from its GGUF, the tiny test Llama)

    def runner(self, settings: StudentSettings) -> Student:
        return Student(settings=settings, cache_dir=Path(self.cache_dir))
