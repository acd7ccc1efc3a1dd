"""Protects against orphaned trainers: SIGKILL of the Dagster process ends its PEFT fine-tune."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from flywheel_core.ml.base_model import TINY_LLAMA, resolve_base_model
from flywheel_core.ml.finetune_job import FineTuneJob
from tests.support.processes import children, ended_within, kill_if_alive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

TRAINER = "flywheel_assets.external.train_lora"
# The orchestrating process: one asset whose step launches the fine-tune through Pipes.
ORCHESTRATOR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import dagster as dg
    from flywheel_core.ml.finetune_job import FineTuneJob
    from resources.finetune.launcher import LocalPeftLauncher

    job = FineTuneJob.model_validate_json(Path(sys.argv[1]).read_text())

    @dg.asset
    def lora_adapter(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return LocalPeftLauncher().launch(context, job)

    dg.materialize([lora_adapter])
    """
)
ROWS = [
    {"code": "x = eval(input())", "review": "eval of user input", "severity": "critical"},
    {"code": "def f():\n    pass", "review": "missing docstring", "severity": "trivial"},
]


def long_job(tmp_path, cache_dir) -> FineTuneJob:
    examples = tmp_path / "curriculum.jsonl"
    examples.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return FineTuneJob(
        base_model_path=str(resolve_base_model(TINY_LLAMA, cache_dir)),
        examples_path=str(examples),
        output_dir=str(tmp_path / "adapter"),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        max_steps=100_000,  # far more than the test waits for
        max_prompt_tokens=192,
        num_threads=1,
        batch_size=2,
        layers_to_train=None,
        explanation_weight=0.0,
    )


def wait_for_trainer(log_path, orchestrator: subprocess.Popen, timeout_s: float) -> None:
    """Until the trainer has opened Pipes (it is past its start-up, into the fine-tune)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "successfully opened dagster pipes" in log_path.read_text(errors="replace"):
            return
        assert orchestrator.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no trainer opened Pipes in {timeout_s}s")


def test_killing_the_orchestrator_ends_the_trainer(tmp_path, cache_dir):
    job_file = tmp_path / "job.json"
    job_file.write_text(long_job(tmp_path, cache_dir).model_dump_json())
    log_path = tmp_path / "orchestrator.log"
    with log_path.open("w") as log:
        orchestrator = subprocess.Popen(
            [sys.executable, "-c", ORCHESTRATOR, str(job_file)], stdout=log, stderr=log
        )
    trainers: list[int] = []
    try:
        wait_for_trainer(log_path, orchestrator, 300)
        trainers = children(orchestrator.pid, TRAINER)
        assert len(trainers) == 1
        orchestrator.kill()  # SIGKILL: the step cannot stop its subprocess itself
        orchestrator.wait()
        assert ended_within(trainers[0], 15), "the trainer outlived the killed orchestrator"
    finally:
        kill_if_alive(orchestrator.pid)
        for pid in trainers:
            kill_if_alive(pid)
