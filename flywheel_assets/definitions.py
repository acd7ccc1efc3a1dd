"""The flywheel's only Definitions. The environment is read here, once, when Dagster loads it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from flywheel_assets.assets import CYCLE_ASSETS
from flywheel_assets.assets.step00_seed_corpus import seed_corpus
from flywheel_assets.assets.step10_lineage_audit import lineage_audit
from flywheel_assets.checks import better_than_deployed, rows_conserved
from flywheel_assets.environments import default_cache_dir, resources_for
from flywheel_assets.jobs import WHEEL_TAG, cycle_job, seed_corpus_job
from flywheel_assets.sensors import feedback_sensor
from flywheel_core.settings import FlywheelSettings
from resources.config import flywheel_config

# Which settings sections each asset depends on: editing one marks those assets stale.
SETTINGS_USED = {
    "exam": ("exam",),
    "student_answers": ("student",),
    "exam_evaluation": ("exam", "curriculum"),
    "curriculum": ("curriculum",),
    "lora_adapter": ("training", "student"),
    "heldout_evaluation": ("heldout", "student"),
    "explanation_preference": ("judge", "student"),
    "reviewer_feedback": ("feedback",),
}


OWNERS = ["team:flywheel"]
# What each asset is made of, shown as kind badges in the UI.
KINDS = {
    "seed_corpus": {"duckdb", "python"},
    "reviewer_feedback": {"duckdb", "polars"},
    "exam": {"duckdb", "openai"},
    "student_answers": {"pytorch", "duckdb"},
    "exam_evaluation": {"duckdb", "openai"},
    "curriculum": {"duckdb", "polars"},
    "lora_adapter": {"pytorch", "huggingface"},
    "heldout_evaluation": {"pytorch", "duckdb"},
    "explanation_preference": {"pytorch", "openai"},
    "deployed_student": {"triton"},
    "lineage_audit": {"duckdb", "markdown"},
}


def describe(assets: list) -> list:
    """Owners and kinds of every asset (descriptions are the asset functions' docstrings)."""

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        kinds = KINDS.get(spec.key.to_user_string(), set())
        return spec.replace_attributes(owners=OWNERS, kinds=set(spec.kinds) | kinds)

    return dg.map_asset_specs(attach, assets)


def stamp_code_versions(assets: list, settings: FlywheelSettings) -> list:
    """Append the hash of the settings an asset uses to its code_version."""

    def stamp(spec: dg.AssetSpec) -> dg.AssetSpec:
        sections = SETTINGS_USED.get(spec.key.to_user_string())
        if not sections:
            return spec
        version = f"{spec.code_version}-cfg{settings.section_hash(*sections)}"
        return spec.replace_attributes(code_version=version)

    return dg.map_asset_specs(stamp, assets)


def build_definitions(
    env: Mapping[str, str] | None = None,
    home: str | Path | None = None,
    overrides: list[str] | None = None,
    executor: dg.ExecutorDefinition = dg.in_process_executor,
) -> dg.Definitions:
    """Definitions for the environment `env` describes (os.environ by default; see
    `flywheel_assets.environments`), with the flywheel home and optional settings overrides."""
    env = os.environ if env is None else env
    home = Path(home or env.get("FLYWHEEL_HOME", ".flywheel")).resolve()
    config = flywheel_config(str(default_cache_dir(env)), env.get("FLYWHEEL_CONFIG"), overrides)
    settings = config.settings()
    wheel = str(home)
    automation = dg.AutomationConditionSensorDefinition(
        "flywheel_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        # deployed_student's condition (an old cycle is never requested) is Python code.
        use_user_code_server=True,
        # Queued with the cycle job's runs: one run per flywheel at a time (dagster.yaml).
        run_tags={WHEEL_TAG: wheel, "flywheel/run": "automation"},
        description="Turns the wheel: once a cycle's reviewer_feedback lands, requests the "
        "cycle's assets downstream in one run (deployed_student only for a cycle not older "
        "than the newest deployed one), then the lineage audit.",
    )
    return dg.Definitions(
        assets=describe([seed_corpus, *stamp_code_versions(CYCLE_ASSETS, settings), lineage_audit]),
        asset_checks=[rows_conserved, better_than_deployed],
        jobs=[cycle_job(wheel, executor), seed_corpus_job],
        sensors=[automation, feedback_sensor],
        resources=resources_for(env, home, config),
        # Every run - the cycle job, automation, UI materializations - steps in one process:
        # the light steps need no process start-up; the fine-tune is a Pipes subprocess.
        executor=executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
