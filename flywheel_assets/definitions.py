"""The flywheel's only Definitions. The environment is read here, once, when Dagster loads it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from flywheel_assets.assets.adapter import lora_adapter
from flywheel_assets.assets.answers import student_answers
from flywheel_assets.assets.audit import lineage_audit
from flywheel_assets.assets.curriculum import curriculum
from flywheel_assets.assets.deployment import deployed_student
from flywheel_assets.assets.evaluation import exam_evaluation
from flywheel_assets.assets.exam import exam
from flywheel_assets.assets.explanations import explanation_preference
from flywheel_assets.assets.feedback import reviewer_feedback, rows_conserved
from flywheel_assets.assets.heldout import heldout_evaluation
from flywheel_assets.assets.seed import seed_corpus
from flywheel_assets.partitions import cycles
from flywheel_assets.sensors import feedback_sensor
from flywheel_assets.serving.gate import better_than_deployed
from flywheel_assets.settings import FlywheelSettings, load_settings
from flywheel_assets.storage import storage_resources
from resources.finetune import FineTuneLauncher, LocalPeftLauncher
from resources.finetune_launchers import nemo_launcher
from resources.flywheel_config import FlywheelConfig
from resources.lineage_store import LineageStore
from resources.llm_teacher import DEFAULT_MODEL, LLMTeacher
from resources.student import StudentModel
from resources.teacher import CorpusTeacher, Teacher
from resources.triton_repository import TritonModelRepository
from resources.triton_server import server_from_env

CYCLE_ASSETS = [
    reviewer_feedback,
    exam,
    student_answers,
    exam_evaluation,
    curriculum,
    lora_adapter,
    heldout_evaluation,
    explanation_preference,
    deployed_student,
]

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

flywheel_cycle_job = dg.define_asset_job(
    "flywheel_cycle",
    selection=dg.AssetSelection.assets(*CYCLE_ASSETS),
    partitions_def=cycles,
    description="One turn of the flywheel: exam, answers, grading, curriculum, fine-tune, deploy.",
)
seed_corpus_job = dg.define_asset_job("seed_corpus_job", selection=[seed_corpus])


def default_cache_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("FLYWHEEL_CACHE", Path.home() / ".cache" / "flywheel")).resolve()


def local_resources(
    home: Path, cache_dir: Path, settings: FlywheelSettings, config: FlywheelConfig
) -> dict:
    """The embedded defaults: everything offline, on this machine."""
    return {
        "flywheel_config": config,
        "store": LineageStore(home=str(home)),
        "teacher": CorpusTeacher(),  # replaced per environment by teacher_resource()
        "student": StudentModel(
            base_model=settings.student.base_model,
            cache_dir=str(cache_dir),
            batch_size=settings.student.batch_size,
            max_prompt_tokens=settings.student.max_prompt_tokens,
            num_threads=settings.student.num_threads,
            dtype=settings.student.dtype,
        ),
        "finetune": LocalPeftLauncher(),
        "model_repository": TritonModelRepository(repository_dir=str(home / "triton_repository")),
    }


ENVIRONMENTS = ("local", "prod")


def teacher_resource(
    name: str, env: Mapping[str, str], settings: FlywheelSettings, store: LineageStore
) -> Teacher:
    """`local`: the offline corpus teacher. `prod`: an OpenAI-compatible endpoint.

    prod reads OPENAI_BASE_URL and OPENAI_API_KEY through EnvVar (resolved when the run starts,
    never stored in the definitions) and the model name from OPENAI_MODEL (default gpt-4o).
    """
    if name == "local":
        return CorpusTeacher()
    t = settings.teacher
    return LLMTeacher(
        base_url=dg.EnvVar("OPENAI_BASE_URL"),
        api_key=dg.EnvVar("OPENAI_API_KEY"),
        model=env.get("OPENAI_MODEL", DEFAULT_MODEL),
        store=store,
        temperature=t.temperature,
        max_tokens=t.max_tokens,
        request_timeout_s=t.request_timeout_s,
        max_concurrency=t.max_concurrency,
        max_retries=t.max_retries,
        backoff_base_s=t.backoff_base_s,
        backoff_max_s=t.backoff_max_s,
        structured_output=t.structured_output,
        privacy_policy=t.privacy_policy,
        budget_usd_per_cycle=t.budget_usd_per_cycle,
        budget_tokens_per_cycle=t.budget_tokens_per_cycle,
        price_input_per_1m=t.prices.input_per_1m,
        price_output_per_1m=t.prices.output_per_1m,
        questions_per_call=t.questions_per_call,
        examples_per_call=t.examples_per_call,
        candidates_per_item=t.candidates_per_item,
    )


def finetune_resource(env: Mapping[str, str], home: Path) -> FineTuneLauncher:
    """FLYWHEEL_FINETUNE: `local` (PEFT subprocess, the default) | `nemo-subprocess` |
    `nemo-k8s` | `nemo-ecs` (the NeMo LoRA recipe on GPU nodes; settings in README)."""
    kind = env.get("FLYWHEEL_FINETUNE", "local")
    return LocalPeftLauncher() if kind == "local" else nemo_launcher(kind, env, home)


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
) -> dg.Definitions:
    """Definitions for FLYWHEEL_ENV (`local`: all offline | `prod`: the LLM teacher) and
    FLYWHEEL_STORAGE (`local` | `s3`: artifacts and the feedback landing zone)."""
    env = os.environ if env is None else env
    name = env.get("FLYWHEEL_ENV", "local")
    if name not in ENVIRONMENTS:
        raise ValueError(f"FLYWHEEL_ENV={name!r} is not supported; use one of {ENVIRONMENTS}")
    home = Path(home or env.get("FLYWHEEL_HOME", ".flywheel")).resolve()
    config = FlywheelConfig(
        cache_dir=str(default_cache_dir(env)),
        config_file=env.get("FLYWHEEL_CONFIG"),
        overrides=list(overrides or []),
    )
    settings = load_settings(config.config_file, config.overrides)
    automation = dg.AutomationConditionSensorDefinition(
        "flywheel_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    return dg.Definitions(
        assets=[seed_corpus, *stamp_code_versions(CYCLE_ASSETS, settings), lineage_audit],
        asset_checks=[rows_conserved, better_than_deployed],
        jobs=[flywheel_cycle_job, seed_corpus_job],
        sensors=[automation, feedback_sensor],
        resources=_resources(name, env, home, Path(config.cache_dir), settings, config),
    )


def _resources(
    name: str,
    env: Mapping[str, str],
    home: Path,
    cache_dir: Path,
    settings: FlywheelSettings,
    config: FlywheelConfig,
) -> dict:
    resources = {
        **local_resources(home, cache_dir, settings, config),
        **storage_resources(env, home),
    }
    resources["teacher"] = teacher_resource(name, env, settings, resources["store"])
    resources["finetune"] = finetune_resource(env, home)
    resources["triton_server"] = server_from_env(env, home)
    return resources


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
