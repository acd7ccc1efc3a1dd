"""The resources of each environment, from the variables `definitions.py` read once.

Same resource keys everywhere: `FLYWHEEL_ENV` picks the teacher (`local`: the offline corpus
teacher; `prod`: an OpenAI-compatible endpoint), `FLYWHEEL_STORAGE` where artifacts and feedback
files live (`local` | `s3`), `FLYWHEEL_FINETUNE` who trains (`local` PEFT | `nemo-*`), and the
`FLYWHEEL_TRITON_*` variables the serving ports, `FLYWHEEL_LINEAGE` where the lineage tables
live (`duckdb` file | `ducklake`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from flywheel_core.settings import LineageSettings, load_settings
from resources.artifacts.local import LocalArtifactStore
from resources.artifacts.s3 import S3ArtifactStore
from resources.config import FlywheelConfig
from resources.feedback_landing import LocalFeedbackLanding, S3FeedbackLanding
from resources.finetune.launcher import FineTuneLauncher, LocalPeftLauncher
from resources.finetune.nemo import nemo_launcher
from resources.lineage.store import LineageStore
from resources.student import StudentModel
from resources.teacher.base import CorpusTeacher, Teacher
from resources.teacher.llm import DEFAULT_MODEL, LLMTeacher
from resources.triton.repository import TritonModelRepository
from resources.triton.server import server_from_env

ENVIRONMENTS = ("local", "prod")
STORAGES = ("local", "s3")
SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def default_cache_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("FLYWHEEL_CACHE", Path.home() / ".cache" / "flywheel")).resolve()


def s3_resource(env: Mapping[str, str]) -> S3Resource:
    """Endpoint and region from plain variables; credentials only through EnvVar."""
    secrets = {name.lower(): dg.EnvVar(name) for name in SECRETS if name in env}
    return S3Resource(
        endpoint_url=env.get("FLYWHEEL_S3_ENDPOINT_URL"),
        region_name=env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION")),
        **secrets,
    )


def storage_resources(env: Mapping[str, str], home: Path) -> dict:
    """`artifacts` and `feedback_landing` for the chosen storage (same keys in both)."""
    storage = env.get("FLYWHEEL_STORAGE", "local")
    if storage == "local":
        return {
            "artifacts": LocalArtifactStore(root=str(home / "artifacts")),
            "feedback_landing": LocalFeedbackLanding(directory=str(home / "feedback")),
        }
    if storage != "s3":
        raise ValueError(f"FLYWHEEL_STORAGE={storage!r} is not supported; use one of {STORAGES}")
    bucket = env.get("FLYWHEEL_S3_BUCKET")
    if not bucket:
        raise ValueError("FLYWHEEL_STORAGE=s3 needs FLYWHEEL_S3_BUCKET")
    prefix = _s3_prefix(env)
    s3 = s3_resource(env)
    return {
        "s3": s3,
        "artifacts": S3ArtifactStore(
            s3=s3,
            bucket=bucket,
            prefix=f"{prefix}/artifacts",
            cache_dir=str(home / "s3_cache"),
        ),
        "feedback_landing": S3FeedbackLanding(s3=s3, bucket=bucket, prefix=f"{prefix}/feedback"),
    }


def _s3_prefix(env: Mapping[str, str]) -> str:
    return env.get("FLYWHEEL_S3_PREFIX", "flywheel").strip("/")


def lineage_store(
    env: Mapping[str, str],
    home: Path,
    settings: LineageSettings | None = None,
    resolved: bool = False,
) -> LineageStore:
    """The lineage store the `lineage` settings describe, FLYWHEEL_LINEAGE / _CATALOG /
    _DATA_PATH overriding them. A catalog URI (it may hold a password) and the S3 credentials
    reach the resource only through EnvVar (`resolved`: their values, for a CLI command that
    uses the store outside a Dagster run)."""
    settings = settings or LineageSettings()

    def secret(name: str) -> str:
        return env[name] if resolved else dg.EnvVar(name)

    backend = env.get("FLYWHEEL_LINEAGE", settings.backend)
    if backend not in ("duckdb", "ducklake"):
        raise ValueError(f"FLYWHEEL_LINEAGE={backend!r} is not supported; use duckdb or ducklake")
    if backend == "duckdb":
        return LineageStore(home=str(home), write_attempts=settings.write_attempts)
    catalog = (
        secret("FLYWHEEL_LINEAGE_CATALOG")
        if env.get("FLYWHEEL_LINEAGE_CATALOG")
        else settings.catalog
    )
    data_path = env.get("FLYWHEEL_LINEAGE_DATA_PATH", settings.data_path)
    if data_path is None and env.get("FLYWHEEL_STORAGE") == "s3" and env.get("FLYWHEEL_S3_BUCKET"):
        data_path = f"s3://{env['FLYWHEEL_S3_BUCKET']}/{_s3_prefix(env)}/lineage/"
    secrets = {
        f"s3_{name.lower().removeprefix('aws_')}": secret(name) for name in SECRETS if name in env
    }
    return LineageStore(
        home=str(home),
        backend="ducklake",
        catalog=catalog,
        data_path=data_path,
        s3_endpoint_url=env.get("FLYWHEEL_S3_ENDPOINT_URL"),
        s3_region=env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION")),
        write_attempts=settings.write_attempts,
        **secrets,
    )


def cli_lineage_store(home: Path, env: Mapping[str, str] | None = None) -> LineageStore:
    """The lineage store a `flywheel` command reads: the same choice as the code location's
    (FLYWHEEL_LINEAGE*, FLYWHEEL_CONFIG's `lineage` settings), secrets resolved."""
    env = os.environ if env is None else env
    settings = load_settings(env.get("FLYWHEEL_CONFIG")).lineage
    return lineage_store(env, home, settings, resolved=True)


def teacher_resource(name: str, env: Mapping[str, str], store: LineageStore) -> Teacher:
    """`local`: the offline corpus teacher. `prod`: an OpenAI-compatible endpoint.

    prod reads OPENAI_BASE_URL and OPENAI_API_KEY through EnvVar (resolved when the run starts,
    never stored in the definitions) and the model name from OPENAI_MODEL (default gpt-4o); the
    rest of its behaviour comes from the run's `teacher` settings.
    """
    if name == "local":
        return CorpusTeacher()
    return LLMTeacher(
        base_url=dg.EnvVar("OPENAI_BASE_URL"),
        api_key=dg.EnvVar("OPENAI_API_KEY"),
        model=env.get("OPENAI_MODEL", DEFAULT_MODEL),
        store=store,
    )


def finetune_resource(env: Mapping[str, str], home: Path) -> FineTuneLauncher:
    """FLYWHEEL_FINETUNE: `local` (PEFT subprocess, the default) | `nemo-subprocess` |
    `nemo-k8s` | `nemo-ecs` (the NeMo LoRA recipe on GPU nodes; see docs/fine-tuning.md)."""
    kind = env.get("FLYWHEEL_FINETUNE", "local")
    return LocalPeftLauncher() if kind == "local" else nemo_launcher(kind, env, home)


def resources_for(
    env: Mapping[str, str], home: Path, config: FlywheelConfig
) -> dict[str, dg.ConfigurableResource]:
    """Every resource of the environment `env` describes."""
    name = env.get("FLYWHEEL_ENV", "local")
    if name not in ENVIRONMENTS:
        raise ValueError(f"FLYWHEEL_ENV={name!r} is not supported; use one of {ENVIRONMENTS}")
    store = lineage_store(env, home, config.settings().lineage)
    return {
        "flywheel_config": config,
        "store": store,
        "teacher": teacher_resource(name, env, store),
        "student": StudentModel(cache_dir=config.cache_dir),
        "finetune": finetune_resource(env, home),
        "model_repository": TritonModelRepository(repository_dir=str(home / "triton_repository")),
        "triton_server": server_from_env(env, home),
        **storage_resources(env, home),
    }
