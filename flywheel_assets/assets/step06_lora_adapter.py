"""lora_adapter: LoRA fine-tune on the cycle's curriculum, warm-started from the last adapter.

Before training, the stopping rule (`flywheel_core/teaching/stopping.py`) may decide the cycle
does not fine-tune: the asset then records the previous adapter again for this cycle, with the
reason in `finetune_skipped_reason` (downstream, `deployed_student` publishes no new version).
Checkpoints live in `<home>/work/<cycle>/checkpoints/<job fingerprint>/`, which the asset does
not clear: a re-materialization after a crash resumes there (metadata `resumed_from_step`),
while a changed job or curriculum gets a new fingerprint and starts over.
"""

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from flywheel_assets.assets.step05_curriculum import curriculum
from flywheel_assets.partitions import cycle_asset
from flywheel_core.hashing import sha256_file
from flywheel_core.ml.adapter_files import canonicalize_adapter_config
from flywheel_core.ml.checkpoints import clear_checkpoints
from flywheel_core.ml.finetune_job import FineTuneJob, checkpoint_dir, job_fingerprint
from flywheel_core.ml.student import Student
from flywheel_core.prompts import prompt_sha256
from flywheel_core.reporting.plots import loss_curve
from flywheel_core.settings import TrainingSettings
from flywheel_core.teaching.step_budget import steps_for_cycle
from flywheel_core.teaching.stopping import StopDecision, decide
from resources.artifacts.base import ArtifactStore
from resources.config import FlywheelConfig
from resources.finetune.launcher import FineTuneLauncher
from resources.lineage.store import LineageStore
from resources.student import StudentModel

VERSION = "4"
# The prompts training examples are rendered with (severity task, explanation task).
TRAINING_PROMPTS = ("severity_rating", "explain_severity")


def write_examples(store: LineageStore, cycle: str, path: Path) -> tuple[int, int]:
    """Write the curriculum as the training file; (examples, of them new this cycle)."""
    frame = store.curriculum_examples(cycle)
    if frame.is_empty():
        raise dg.Failure(f"cycle {cycle} has no curriculum: materialize `curriculum` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_ndjson(path)
    return frame.height, int(frame["new"].sum())


def build_job(
    training: TrainingSettings,
    student: Student,
    work: Path,
    init_dir: Path | None,
    max_steps: int,
) -> FineTuneJob:
    """The job from the `training` settings' LoRA hyperparameters, the student's model, prompt
    length and threads, the cycle's paths and the stopping rule's step budget."""
    return FineTuneJob(
        **training.lora(),
        base_model_path=str(student.base_model_path()),
        examples_path=str(work / "curriculum.jsonl"),
        output_dir=str(work / "adapter"),
        init_adapter_dir=str(init_dir) if init_dir else None,
        max_steps=max_steps,
        max_prompt_tokens=student.max_prompt_tokens,
        num_threads=student.num_threads,
    )


def stop_decision(
    store: LineageStore, cycle: str, training: TrainingSettings, steps: int
) -> StopDecision:
    return decide(
        store.training_history(cycle),
        steps,
        training.plateau_cycles,
        training.plateau_min_gain,
        training.max_total_steps,
        training.max_gpu_hours,
    )


def reuse_previous(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: Student,
    decision: StopDecision,
    size: int,
) -> dg.MaterializeResult:
    """Record the previous adapter as this cycle's (no training), saying which rule stopped it."""
    cycle = context.partition_key
    previous = store.previous_adapter(cycle)
    if previous is None:
        raise dg.Failure(f"{decision.detail}, and no earlier adapter to re-use")
    context.log.info(f"no fine-tune this cycle ({decision.reason}): {decision.detail}")
    row = {
        **previous,
        "cycle": cycle,
        "init_adapter_sha256": previous["adapter_sha256"],
        "curriculum_cycle": cycle,
        "curriculum_size": size,
        "steps": 0,
        "final_loss": None,
        "train_seconds": 0.0,
        "config": json.dumps({"skipped": decision.reason, "detail": decision.detail}),
        "created_at": datetime.now(UTC),
        "asset_version": VERSION,
        "device": None,
        "finetune_skipped_reason": decision.reason,
    }
    store.replace_rows("adapters", pl.DataFrame([row]), cycle=cycle)
    return dg.MaterializeResult(
        metadata={
            "finetune_skipped_reason": decision.reason,
            "finetune_skipped_detail": decision.detail,
            "steps": 0,
            "adapter_sha256": previous["adapter_sha256"],
            "adapter_uri": dg.MetadataValue.url(previous["uri"]),
            "reused_adapter_from_cycle": previous["cycle"],
            "base_model": student.base_model_id(),
            "curriculum_size": size,
        }
    )


def adapter_row(
    cycle: str, job: FineTuneJob, ref, runner: dict, previous: dict | None, size: int, **lineage
) -> dict:
    """The `adapters` row of a trained adapter (runner metrics as reported through Pipes)."""
    return {
        "cycle": cycle,
        "adapter_sha256": ref.sha256,
        "uri": ref.uri,
        "init_adapter_sha256": previous["adapter_sha256"] if previous else None,
        "curriculum_cycle": cycle,
        "curriculum_size": size,
        "steps": int(runner.get("steps", job.max_steps)),
        "final_loss": float(runner.get("final_loss", float("nan"))),
        "train_seconds": float(runner.get("wall_s", 0.0)),
        "config": json.dumps(job.model_dump()),
        "created_at": datetime.now(UTC),
        "asset_version": VERSION,
        "device": str(runner.get("device", "cpu")),
        "finetune_skipped_reason": None,
        "training_prompts": json.dumps({name: prompt_sha256(name) for name in TRAINING_PROMPTS}),
        **lineage,
    }


@cycle_asset(VERSION, deps=[curriculum], pool="finetune")
def lora_adapter(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    finetune: FineTuneLauncher,
    artifacts: ArtifactStore,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """A LoRA adapter (safetensors), stored content-addressed; its loss curve in the metadata."""
    cycle = context.partition_key
    settings = flywheel_config.settings()
    runner = student.runner(settings.student)
    work = Path(store.home) / "work" / cycle
    shutil.rmtree(work / "adapter", ignore_errors=True)
    size, new = write_examples(store, cycle, work / "curriculum.jsonl")
    steps, steps_reason = steps_for_cycle(new, size - new, settings.training)
    decision = stop_decision(store, cycle, settings.training, steps)
    if decision.reason is not None:
        return reuse_previous(context, store, runner, decision, size)
    previous = store.previous_adapter(cycle)
    init_dir = artifacts.adapter_dir(previous) if previous else None
    job = build_job(settings.training, runner, work, init_dir, decision.max_steps)
    data_version = sha256_file(Path(job.examples_path))
    job = job.model_copy(
        update={"checkpoint_dir": str(checkpoint_dir(work, job_fingerprint(job, data_version)))}
    )
    context.log.info(f"steps this cycle: {steps_reason}")
    context.log.info(
        f"fine-tuning on {size} examples ({new} new) for {job.max_steps} steps, warm start: "
        f"{previous['adapter_sha256'][:12] if previous else 'none (fresh LoRA)'}"
    )
    reported = finetune.launch(context, job)
    canonicalize_adapter_config(Path(job.output_dir))  # also for adapters other trainers wrote
    ref = artifacts.put_dir(Path(job.output_dir), "adapters")
    clear_checkpoints(Path(job.checkpoint_dir))  # only now: a failed upload can still resume
    metrics = {key: _value(entry) for key, entry in (reported.metadata or {}).items()}
    row = adapter_row(
        cycle,
        job,
        ref,
        metrics,
        previous,
        size,
        base_model=runner.base_model_id(),
        data_version=data_version,
    )
    store.replace_rows("adapters", pl.DataFrame([row]), cycle=cycle)
    return dg.MaterializeResult(
        metadata={
            **(reported.metadata or {}),
            **loss_picture(metrics),
            "adapter_sha256": ref.sha256,
            "adapter_uri": dg.MetadataValue.url(ref.uri),
            "adapter_bytes": ref.size_bytes,
            "base_model": runner.base_model_id(),
            "data_version": data_version,
            "warm_start_adapter_sha256": row["init_adapter_sha256"] or "none",
            "warm_start_from_cycle": previous["cycle"] if previous else "none",
            "curriculum_size": size,
            "new_examples": new,
            "replay_share": job.replay_share,
            "steps_rule": steps_reason,
        }
    )


def loss_picture(metrics: dict) -> dict:
    """The loss curve as a picture, when the fine-tune reported the loss of every step."""
    losses = metrics.get("train_loss")
    if not losses:
        return {}
    validation = [(p["step"], p["loss"]) for p in metrics.get("validation_loss") or []]
    return {"loss_curve": dg.MetadataValue.md(loss_curve(losses, validation))}


def _value(entry: object) -> object:
    """Pipes metadata arrives as MetadataValue objects; unwrap to the raw value."""
    return getattr(entry, "value", entry)
