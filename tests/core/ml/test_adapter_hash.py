"""Protects reproducibility by sha: the same training job gives the same adapter bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flywheel_core.hashing import sha256_dir
from flywheel_core.ml.adapter_files import canonical_config, canonicalize_adapter_config
from tests.core.ml.test_lora_training import config, synthetic_examples, tiny_path  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


def test_config_order_does_not_change_the_bytes(tmp_path):
    a = {"target_modules": ["v_proj", "q_proj", "o_proj"], "r": 8, "alpha": 16}
    b = {"alpha": 16, "r": 8, "target_modules": ["o_proj", "q_proj", "v_proj"]}
    assert canonical_config(a) == canonical_config(b)
    (tmp_path / "adapter_config.json").write_text(json.dumps(a))
    assert canonicalize_adapter_config(tmp_path) is True
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"] == [
        "o_proj",
        "q_proj",
        "v_proj",
    ]
    assert canonicalize_adapter_config(tmp_path) is False  # already canonical


def test_two_runs_of_the_same_job_give_the_same_sha256(tiny_path, tmp_path):  # noqa: F811
    """Each run in its own process with another string-hash seed, as two Dagster runs are."""
    examples = tmp_path / "curriculum.jsonl"
    examples.write_text("\n".join(json.dumps(e) for e in synthetic_examples(8)) + "\n")
    shas = []
    for seed in ("1", "2"):
        out = tmp_path / f"adapter-{seed}"
        job = config(tiny_path, out, max_steps=2).model_dump(mode="json")
        job["examples_path"] = str(examples)
        job_file = tmp_path / f"job-{seed}.json"
        job_file.write_text(json.dumps(job))
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, "-m", "flywheel_assets.external.train_lora", "--job", str(job_file)],
            check=True,
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=300,
        )
        shas.append(sha256_dir(out))
    assert shas[0] == shas[1]
