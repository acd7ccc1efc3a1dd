"""Where artifacts and feedback files live: FLYWHEEL_STORAGE=local (default) or s3."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from resources.artifact_store import LocalArtifactStore
from resources.feedback_landing import LocalFeedbackLanding, S3FeedbackLanding
from resources.s3_artifact_store import S3ArtifactStore

STORAGES = ("local", "s3")
SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


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
    prefix = env.get("FLYWHEEL_S3_PREFIX", "flywheel").strip("/")
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
