"""LoRA fine-tune entry point, run by the Dagster asset through ``PipesSubprocessClient``.

Under Dagster::

    python -m flywheel_assets.external.train_lora

reads the job from the Pipes extra ``"job"``: ``TrainConfig`` fields plus ``examples_path``
(JSONL or parquet with columns code, review, severity, weight and optionally explanation), on
top of the recipe file ``recipes/lora_cpu.yaml`` (the job's fields win). It logs
``step i/N loss x.xxxx`` every step, saves the adapter to ``output_dir`` and reports an asset
materialization with the run's metrics.
With ``checkpoint_dir`` in the job, a re-run after a crash resumes from the last checkpoint.

Without Dagster (debugging), pass the same job as a JSON file, optionally another recipe file and
dotlist overrides (highest precedence)::

    python -m flywheel_assets.external.train_lora --job job.json learning_rate=1e-3 max_steps=20
    python -m flywheel_assets.external.train_lora --config my_recipe.yaml --job job.json

Launched by ``LocalPeftLauncher``, the trainer dies with the process that launched it (the
Dagster step), so killing the orchestrator never leaves a trainer running; the re-run resumes
from the last checkpoint.

For the crash-resume test only: ``FLYWHEEL_TEST_CRASH_AFTER_STEP=k`` in the environment kills
the process with SIGKILL right after step ``k`` (and its checkpoint, if one is due) is done.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, PipesEnvVarParamsLoader, open_dagster_pipes

from flywheel_core.processes import die_with_launcher

logger = logging.getLogger("flywheel_assets.external.train_lora")
EXAMPLE_COLUMNS = ("code", "review", "severity", "weight", "explanation")
CRASH_ENV = "FLYWHEEL_TEST_CRASH_AFTER_STEP"


class _LocalReporter:
    """Stands in for the Pipes context when the script is run by hand."""

    log = logger

    def report_asset_materialization(self, metadata: Mapping[str, Any]) -> None:
        logger.info("materialization metadata: %s", json.dumps(dict(metadata)))


def read_examples(path: Path) -> list[dict[str, Any]]:
    """Curriculum rows from JSONL or parquet; ``weight`` defaults to 1.0, code to ''."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        with path.open(encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    examples = []
    for row in rows:
        weight = row.get("weight")
        examples.append(
            {
                "code": row.get("code") or "",
                "review": row["review"],
                "severity": row["severity"],
                "weight": 1.0 if weight is None else float(weight),
                "explanation": row.get("explanation") or None,
            }
        )
    return examples


def materialization_metadata(metrics: Mapping[str, Any], n_examples: int) -> dict[str, Any]:
    """Plain-number/string (and one JSON) metadata for the materialization event."""
    curve = [{"step": int(s), "loss": round(float(x), 6)} for s, x in metrics["validation_loss"]]
    return {
        "steps": int(metrics["steps"]),
        "examples": n_examples,
        "final_loss": round(float(metrics["final_loss"]), 6),
        "mean_loss": round(float(metrics["mean_loss"]), 6),
        "tokens_per_s": round(float(metrics["tokens_per_s"]), 2),
        "seconds_per_step": round(float(metrics["seconds_per_step"]), 4),
        "wall_s": round(float(metrics["wall_s"]), 2),
        "train_tokens": int(metrics["train_tokens"]),
        "trainable_params": int(metrics["trainable_params"]),
        "dtype": str(metrics["dtype"]),
        "device": str(metrics["device"]),
        "adapter_dir": str(metrics["output_dir"]),
        "resumed_from_step": int(metrics["resumed_from_step"]),
        "train_examples": int(metrics["train_examples"]),
        "explanation_examples": int(metrics["explanation_examples"]),
        "explanation_steps": int(metrics["explanation_steps"]),
        "mean_explanation_loss": _number(metrics["mean_explanation_loss"]),
        "final_explanation_loss": _number(metrics["final_explanation_loss"]),
        "validation_examples": int(metrics["validation_examples"]),
        "early_stopped": bool(metrics["early_stopped"]),
        "best_step": int(metrics["best_step"]),
        "validation_loss": {"raw_value": curve, "type": "json"},
        # the loss of every step: lora_adapter draws it as a picture
        "train_loss": {
            "raw_value": [round(float(x), 6) for x in metrics["losses"]],
            "type": "json",
        },
    }


def _number(value: float) -> float | None:
    """Rounded, or None for NaN (no explanation steps): NaN is not valid metadata JSON."""
    return None if math.isnan(value) else round(float(value), 6)


def _crash_after_step() -> int | None:
    raw = os.environ.get(CRASH_ENV)
    return int(raw) if raw else None


def run_job(
    job: Mapping[str, Any],
    reporter: PipesContext | _LocalReporter,
    recipe: Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Train as ``job`` says, streaming progress and the result to ``reporter``."""
    import torch

    from flywheel_core.ml.lora_training import set_threads, train_lora
    from flywheel_core.ml.recipe import resolve_config

    config, examples_path = resolve_config(job, recipe, overrides)
    set_threads(config.num_threads)
    crash_after = _crash_after_step()
    examples = read_examples(examples_path)
    reporter.log.info(
        f"training LoRA on {len(examples)} examples for {config.max_steps} steps "
        f"(base {config.base_model_path}, threads {torch.get_num_threads()})"
    )

    explained = sum(bool(ex["explanation"]) for ex in examples)
    if config.explanation_weight > 0:
        reporter.log.info(
            f"explanation task: {explained} rows have a reference explanation "
            f"(weight {config.explanation_weight}, up to {config.explanation_batch_size} a step)"
        )

    def on_step(step: int, loss: float) -> None:
        reporter.log.info(f"step {step}/{config.max_steps} loss {loss:.4f}")
        if step == crash_after:
            reporter.log.warning(f"{CRASH_ENV}={crash_after}: killing the training process")
            os.kill(os.getpid(), signal.SIGKILL)

    metrics = train_lora(config, examples, on_step)
    if metrics["resumed_from_step"]:
        reporter.log.info(f"resumed from the checkpoint of step {metrics['resumed_from_step']}")
    metadata = {
        **materialization_metadata(metrics, len(examples)),
        # The hyperparameters as this runner resolved them (recipe < job < overrides).
        "learning_rate": config.learning_rate,
        "lora_r": config.lora_r,
        "batch_size": config.batch_size,
    }
    reporter.report_asset_materialization(metadata=metadata)
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    die_with_launcher()  # killed with the Dagster step that launched it: no orphaned trainer
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, help="job JSON file (when not launched by Dagster)")
    parser.add_argument("--config", type=Path, help="recipe YAML (default recipes/lora_cpu.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value TrainConfig overrides")
    args = parser.parse_args(argv)
    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            run_job(pipes.get_extra("job"), pipes, args.config, args.overrides)
        return 0
    if args.job is None:
        parser.error("not launched by Dagster Pipes: pass --job job.json")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    job = json.loads(args.job.read_text(encoding="utf-8"))
    run_job(job, _LocalReporter(), args.config, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
