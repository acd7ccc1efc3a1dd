"""The flywheel's settings as resources: fixed per code location, overridable per run."""

import dagster as dg

from flywheel_core.settings import FlywheelSettings, load_settings


class FlywheelLocation(dg.ConfigurableResource):
    """What the code location was loaded with (FLYWHEEL_CACHE, FLYWHEEL_CONFIG, `--set`): the
    same for every run, so the launchpad never asks for it."""

    cache_dir: str  # models converted once, downloaded sdists, built corpora
    config_file: str | None = None
    overrides: list[str] = []


class FlywheelConfig(dg.ConfigurableResource):
    """The run's settings: defaults < the location's file < the location's overrides < this
    run's `overrides` (launchpad run config, e.g. `["exam.num_questions=20"]`)."""

    # A nested resource: fixed when the location loads, not part of the run config.
    location: FlywheelLocation
    overrides: list[str] = []

    @property
    def cache_dir(self) -> str:
        return self.location.cache_dir

    def settings(self) -> FlywheelSettings:
        return load_settings(self.location.config_file, [*self.location.overrides, *self.overrides])


def flywheel_config(
    cache_dir: str, config_file: str | None = None, overrides: list[str] | None = None
) -> FlywheelConfig:
    """The settings resource of a code location loaded with these values."""
    location = FlywheelLocation(
        cache_dir=cache_dir, config_file=config_file, overrides=list(overrides or [])
    )
    return FlywheelConfig(location=location)
