"""Fine-tune launchers: hand a training job to a runner and get an adapter back through Pipes."""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg

from flywheel_core.ml.finetune_job import FineTuneJob
from flywheel_core.processes import launcher_env


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
            **launcher_env(),  # the trainer dies with this process (no orphan when it is killed)
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
