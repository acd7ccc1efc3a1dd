"""The flywheel's settings as a resource, so a run can override them from the launchpad."""

from __future__ import annotations

import dagster as dg

from flywheel_assets.settings import FlywheelSettings, load_settings


class FlywheelConfig(dg.ConfigurableResource):
    """Defaults file + optional YAML file + dotlist overrides (e.g. `exam.num_questions=20`)."""

    cache_dir: str  # models converted once, downloaded sdists, built corpora
    config_file: str | None = None
    overrides: list[str] = []

    def settings(self) -> FlywheelSettings:
        return load_settings(self.config_file, self.overrides)
