"""Fine-tune launchers: hand a training job to a runner and get an adapter back through Pipes."""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
from pydantic import BaseModel


class FineTuneJob(BaseModel):
    """Everything a runner needs; the same contract for every launcher."""

    base_model_path: str
    examples_path: str  # JSONL: code, review, severity, weight, explanation (optional)
    output_dir: str
    init_adapter_dir: str | None = None  # warm start
    learning_rate: float
    batch_size: int
    max_steps: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    layers_to_train: int | None
    max_prompt_tokens: int
    seed: int
    num_threads: int
    loss: str = "label"  # "label" | "completion"
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16"
    # Crash resume: a directory the asset keeps between attempts (None = no checkpoints).
    checkpoint_dir: str | None = None
    checkpoint_every: int = 10
    # Early stop on a hash-selected validation split of the curriculum (eval_every 0 = off).
    eval_every: int = 10
    patience: int = 3
    validation_fraction: float = 0.1
    # Multi-task: rows with a reference explanation also train the explanation task.
    explanation_weight: float = 0.5
    explanation_batch_size: int = 2
    max_explanation_tokens: int = 96


class FineTuneLauncher(dg.ConfigurableResource, ABC):
    """Runs a FineTuneJob somewhere and reports its materialization through Dagster Pipes."""

    @abstractmethod
    def launch(self, context: dg.AssetExecutionContext, job: FineTuneJob) -> dg.MaterializeResult:
        """Blocks until the adapter is in `job.output_dir`; returns the runner's metadata."""


class LocalPeftLauncher(FineTuneLauncher):
    """The embedded default: the PEFT recipe in a local subprocess (CPU, or CUDA if present)."""

    python_executable: str | None = None

    def launch(self, context: dg.AssetExecutionContext, job: FineTuneJob) -> dg.MaterializeResult:
        Path(job.output_dir).mkdir(parents=True, exist_ok=True)
        threads = str(job.num_threads)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "TOKENIZERS_PARALLELISM": "false",
        }
        command = [
            self.python_executable or sys.executable,
            "-m",
            "flywheel_assets.external.train_lora",
        ]
        invocation = dg.PipesSubprocessClient().run(
            command=command, context=context, extras={"job": job.model_dump()}, env=env
        )
        return invocation.get_materialize_result()
