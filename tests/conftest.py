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
