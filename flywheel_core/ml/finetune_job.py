"""The contract between the `lora_adapter` asset and every fine-tune runner (PEFT or NeMo)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from flywheel_core.settings import LoraSettings


class FineTuneJob(LoraSettings):
    """The LoRA hyperparameters (inherited from the `training` settings) plus the cycle's paths,
    step budget and the student's prompt length and threads. It travels as JSON (Pipes extras)."""

    base_model_path: str
    examples_path: str  # JSONL: code, review, severity, weight, explanation (optional)
    output_dir: str
    init_adapter_dir: str | None = None  # warm start
    max_steps: int
    max_prompt_tokens: int
    num_threads: int
    # Crash resume: a directory the asset keeps between attempts (None = no checkpoints).
    checkpoint_dir: str | None = None


# Fields that do not change what a job computes (left out of its fingerprint).
_NOT_FINGERPRINTED = {"output_dir", "checkpoint_dir", "examples_path", "num_threads"}


def job_fingerprint(job: FineTuneJob, data_version: str) -> str:
    """Short hash of the job minus its paths, plus the curriculum's sha256."""
    fields = job.model_dump(exclude=_NOT_FINGERPRINTED)
    payload = json.dumps(fields, sort_keys=True) + data_version
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def checkpoint_dir(work: Path, fingerprint: str) -> Path:
    """This job's checkpoint dir under the cycle's work dir; other jobs' checkpoints of the
    cycle (a changed job or curriculum) are removed."""
    root = work / "checkpoints"
    if root.is_dir():
        for stale in root.iterdir():
            if stale.name != fingerprint:
                shutil.rmtree(stale, ignore_errors=True)
    return root / fingerprint
