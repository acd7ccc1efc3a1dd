"""Protects publishing to the Triton repository from two processes at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from flywheel_core.hashing import sha256_dir
from resources.triton.repository import TritonModelRepository

PUBLISHES = 30  # per process


def _publish_many(repo_dir: str, adapter: str, tag: str, results) -> None:
    repo = TritonModelRepository(repository_dir=repo_dir)
    sha = sha256_dir(Path(adapter))
    versions = [
        repo.publish(Path(adapter), sha, Path("/base"), 64, extra={"by": tag}).version
        for _ in range(PUBLISHES)
    ]
    results.put((tag, versions))


def test_two_processes_publish_thirty_versions_each(tmp_path):
    adapters = {}
    for tag in "ab":
        adapter = tmp_path / f"adapter-{tag}"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text(f'{{"r": 8, "by": "{tag}"}}')
        (adapter / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 64)
        adapters[tag] = adapter
    repo = TritonModelRepository(repository_dir=str(tmp_path / "repo"))
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_publish_many, args=(repo.repository_dir, str(adapters[t]), t, results))
        for t in adapters
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]  # the old code raised in one or both
    got = dict(results.get(timeout=5) for _ in procs)
    assert sorted(got["a"] + got["b"]) == list(range(1, 2 * PUBLISHES + 1))  # none shared
    assert repo.versions() == list(range(1, 2 * PUBLISHES + 1))
    for version in repo.versions():  # every folder complete: its adapter matches its record
        by = repo.deployment_info(version)["by"]
        assert version in got[by]
        assert repo.verify_version(version) == sha256_dir(adapters[by])
    leftovers = [p.name for p in repo.model_dir().iterdir() if p.name.startswith(".staging")]
    assert leftovers == [] and repo.config_path().is_file()
