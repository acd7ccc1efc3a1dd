"""lora_adapter: LoRA fine-tune on the cycle's curriculum, warm-started from the last adapter."""

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from flywheel_assets import lineage
from flywheel_assets.assets.curriculum import curriculum
from flywheel_assets.partitions import cycle_asset
from resources.artifact_store import ArtifactStore
from resources.finetune import FineTuneJob, FineTuneLauncher
from resources.flywheel_config import FlywheelConfig
from resources.lineage_store import LineageStore
from resources.student import StudentModel

VERSION = "1"


def write_examples(store: LineageStore, cycle: str, path: Path) -> int:
    frame = store.query(
        "SELECT code, review, severity, weight FROM curricula WHERE cycle = ? ORDER BY example_id",
        [cycle],
    )
    if frame.is_empty():
        raise dg.Failure(f"cycle {cycle} has no curriculum: materialize `curriculum` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_ndjson(path)
    return frame.height


@cycle_asset(VERSION, deps=[curriculum], pool="finetune")
def lora_adapter(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    finetune: FineTuneLauncher,
    artifacts: ArtifactStore,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """A LoRA adapter (safetensors), stored content-addressed; loss per step in the run log."""
    cycle = context.partition_key
    training = flywheel_config.settings().training
    work = Path(store.home) / "work" / cycle
    shutil.rmtree(work / "adapter", ignore_errors=True)
    size = write_examples(store, cycle, work / "curriculum.jsonl")
    previous = lineage.previous_adapter(store, cycle)
    init_dir = artifacts.local_dir(lineage.adapter_ref(previous)) if previous else None
    job = FineTuneJob(
        base_model_path=str(student.base_model_path()),
        examples_path=str(work / "curriculum.jsonl"),
        output_dir=str(work / "adapter"),
        init_adapter_dir=str(init_dir) if init_dir else None,
        learning_rate=training.learning_rate,
        batch_size=training.batch_size,
        max_steps=training.steps_per_cycle,
        lora_r=training.lora_r,
        lora_alpha=training.lora_alpha,
        lora_dropout=training.lora_dropout,
        layers_to_train=training.layers_to_train,
        max_prompt_tokens=student.max_prompt_tokens,
        seed=training.seed,
        num_threads=student.num_threads,
        loss=training.loss,
        dtype=training.dtype,
    )
    context.log.info(
        f"fine-tuning on {size} examples for {job.max_steps} steps, warm start: "
        f"{previous['adapter_sha256'][:12] if previous else 'none (fresh LoRA)'}"
    )
    reported = finetune.launch(context, job)
    ref = artifacts.put_dir(Path(job.output_dir), "adapters")
    runner = dict(reported.metadata or {})
    row = {
        "cycle": cycle,
        "adapter_sha256": ref.sha256,
        "uri": ref.uri,
        "base_model": student.base_model_id(),
        "init_adapter_sha256": previous["adapter_sha256"] if previous else None,
        "curriculum_cycle": cycle,
        "curriculum_size": size,
        "steps": int(_value(runner.get("steps", job.max_steps))),
        "final_loss": float(_value(runner.get("final_loss", float("nan")))),
        "train_seconds": float(_value(runner.get("wall_s", 0.0))),
        "config": json.dumps(job.model_dump()),
        "created_at": datetime.now(UTC),
        "asset_version": VERSION,
    }
    store.replace_rows("adapters", pl.DataFrame([row]), cycle=cycle)
    return dg.MaterializeResult(
        metadata={
            **runner,
            "adapter_sha256": ref.sha256,
            "adapter_uri": dg.MetadataValue.url(ref.uri),
            "adapter_bytes": ref.size_bytes,
            "base_model": student.base_model_id(),
            "warm_start_adapter_sha256": row["init_adapter_sha256"] or "none",
            "warm_start_from_cycle": previous["cycle"] if previous else "none",
            "curriculum_size": size,
        }
    )


def _value(entry: object) -> object:
    """Pipes metadata arrives as MetadataValue objects; unwrap to the raw value."""
    return getattr(entry, "value", entry)
