"""NeMo AutoModel LoRA fine-tune entry point: runs INSIDE the NeMo venv / container, speaks Pipes.

    python -m flywheel_assets.external.nemo_automodel_lora

It imports only the standard library, ``dagster_pipes`` and ``flywheel_core`` at module level
(the NeMo venv has no dagster and none of the orchestrator's packages); torch and
nemo_automodel are imported where a run needs them. It reads two Pipes extras:

- ``job``: ``flywheel_core.ml.finetune_job.FineTuneJob`` as a dict (paths as this machine sees
  them): the same job the PEFT recipe gets;
- ``nemo``: ``flywheel_core.ml.nemo_options.NemoOptions`` as a dict (``dataset_root`` holds the
  task rows ``flywheel_core.ml.nemo_data`` wrote on the orchestrator).

What a run does:

1. writes ``<experiment_dir>/recipe.yaml``, the config of nemo_automodel's stock
   ``TrainFinetuneRecipeForNextTokenPrediction`` generated from the job
   (``flywheel_core.ml.nemo_automodel_recipe``: gloo on CPU, NCCL on CUDA; bf16 compute where
   the hardware has it, as the PEFT recipe's ``dtype: auto``);
2. starts ``torchrun --nproc-per-node N -m flywheel_assets.external.nemo_automodel_lora
   --worker recipe.yaml`` (the ``automodel`` CLI refuses a machine without CUDA; torchrun is
   what it runs underneath). Each worker builds the recipe, loads the previous cycle's adapter
   into the fresh LoRA when the job has ``init_adapter_dir`` (warm start), and trains;
3. follows the recipe's ``training.jsonl`` while it trains and logs ``step i/N loss x`` to
   Dagster for every optimizer step;
4. copies the last checkpoint's adapter (``adapter_model.safetensors`` + ``adapter_config.json``,
   HF PEFT format, which ``peft.PeftModel.from_pretrained`` loads) into ``job["output_dir"]``
   and reports the run's metrics as the materialization.

Launched by ``NemoSubprocessLauncher``, this process and the workers die with the Dagster step
that launched it (``flywheel_core.processes``): killing the orchestrator leaves no trainer.

Checkpoints stay in ``<experiment_dir>/checkpoints`` (outside the adapter dir): a re-run after a
crash resumes from the last one (the recipe finds it); the launcher clears them when the job or
the data changed.

On a CPU-only machine nemo_automodel 0.7.0 calls CUDA in three places; the tests run it with a
TEST-ONLY shim on the venv's PYTHONPATH (``tests/support/nemo_cpu_shim``). This module contains
no such workaround: in production the recipe runs on GPUs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from flywheel_core.ml.hardware import cpu_has_native_bf16
from flywheel_core.ml.nemo_automodel_recipe import CHECKPOINTS, RECIPE_CLASS, automodel_config
from flywheel_core.ml.nemo_data import VALIDATION_FILE
from flywheel_core.ml.nemo_options import HF_ADAPTER_FILES, NIM_TARGET_MODULES, NemoOptions
from flywheel_core.processes import die_with_launcher

logger = logging.getLogger("flywheel_assets.external.nemo_automodel_lora")
ENTRY_MODULE = "flywheel_assets.external.nemo_automodel_lora"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "training.jsonl"  # the recipe's per-step metrics, in the checkpoint dir
VALIDATION_METRICS_FILE = "validation.jsonl"
WARM_START_FILE = "warm_start.json"  # written by rank 0 when it loaded the previous adapter
POLL_S = 1.0


class _LocalReporter:
    """Stands in for the Pipes context when the script is run by hand."""

    log = logger

    def report_asset_materialization(self, metadata: Mapping[str, Any]) -> None:
        logger.info("materialization metadata: %s", json.dumps(dict(metadata)))


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def experiment_paths(options: NemoOptions) -> tuple[Path, Path]:
    """(recipe.yaml, checkpoint dir) under the experiment dir."""
    root = Path(options.experiment_dir)
    return root / RECIPE_FILE, root / CHECKPOINTS


def read_adapter_config(adapter_dir: str | Path | None) -> dict[str, Any] | None:
    if not adapter_dir:
        return None
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))


def write_recipe(job: Mapping[str, Any], options: NemoOptions, device: str) -> Path:
    world = options.nproc_per_node * options.num_nodes
    init = read_adapter_config(job.get("init_adapter_dir"))
    validation_file = Path(options.dataset_root) / VALIDATION_FILE
    validation = validation_file.is_file() and validation_file.stat().st_size > 0
    bf16 = cpu_has_native_bf16()
    config = automodel_config(job, options, device, world, init, validation, bf16)
    path, _ = experiment_paths(options)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def torchrun_command(
    options: NemoOptions, recipe: Path, init_adapter_dir: str | None = None
) -> list[str]:
    """The torchrun invocation of the workers (single node: ``--standalone`` rendezvous)."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    if options.num_nodes == 1:
        command.append("--standalone")
    command += [
        f"--nnodes={options.num_nodes}",
        f"--nproc-per-node={options.nproc_per_node}",
        "-m",
        ENTRY_MODULE,
        "--worker",
        str(recipe),
    ]
    if init_adapter_dir:
        command += ["--init-adapter", str(init_adapter_dir)]
    return command


def lora_state_from_adapter(adapter_dir: str | Path) -> dict[str, Any]:
    """The adapter's tensors keyed as the model's LoRA parameters (HF PEFT's
    ``base_model.model.`` prefix off): ``model.layers.N.self_attn.q_proj.lora_A.weight``."""
    from safetensors.torch import load_file

    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    return {key.removeprefix("base_model.model."): value for key, value in state.items()}


def load_warm_start(model: Any, adapter_dir: str | Path) -> int:
    """Copy the previous adapter's weights into the recipe's (FSDP2-sharded) LoRA parameters;
    the number of tensors loaded. Every LoRA parameter must be found in the adapter."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = lora_state_from_adapter(adapter_dir)
    lora_names = [name for name, p in model.named_parameters() if p.requires_grad]
    missing = sorted(set(lora_names) - set(state))
    if missing:
        raise ValueError(f"warm start: {adapter_dir} has no weights for {missing[:4]}...")
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, {name: state[name] for name in lora_names}, options=options)
    return len(lora_names)


def worker(recipe_path: Path, init_adapter_dir: str | None) -> None:
    """One torchrun rank: the stock recipe, plus the warm start on a fresh (not resumed) run."""
    from nemo_automodel.components.config.loader import load_yaml_config
    from nemo_automodel.recipes.llm.train_ft import TrainFinetuneRecipeForNextTokenPrediction

    recipe = TrainFinetuneRecipeForNextTokenPrediction(load_yaml_config(recipe_path))
    recipe.setup()
    if init_adapter_dir and recipe.step_scheduler.step == 0:
        loaded = load_warm_start(recipe.model_parts[0], init_adapter_dir)
        logger.info("warm start: %d LoRA tensors from %s", loaded, init_adapter_dir)
        if os.environ.get("RANK", "0") == "0":
            record = {"tensors": loaded, "adapter": str(init_adapter_dir)}
            (Path(recipe_path).parent / WARM_START_FILE).write_text(json.dumps(record))
    recipe.run_train_validation_loop()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return records


def train(
    command: Sequence[str],
    metrics_path: Path,
    max_steps: int,
    log: Any,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run the workers, logging each optimizer step's loss as the recipe records it; the
    metrics of every step. Raises when torchrun fails."""
    seen = 0
    started = time.monotonic()

    def report() -> list[dict[str, Any]]:
        nonlocal seen
        records = read_jsonl(metrics_path)
        for record in records[seen:]:
            step = int(record.get("step", 0)) + 1
            log.info(f"step {step}/{max_steps} loss {float(record['loss']):.4f}")
        seen = max(seen, len(records))
        return records

    process = subprocess.Popen(list(command), env=dict(env) if env is not None else None)
    while process.poll() is None:
        time.sleep(POLL_S)
        report()
    records = report()
    if process.returncode != 0:
        raise RuntimeError(f"torchrun exited with {process.returncode}: {' '.join(command)}")
    log.info(f"trained {len(records)} steps in {time.monotonic() - started:.1f} s")
    return records


def last_checkpoint(checkpoint_root: Path) -> Path:
    """The adapter dir (``.../epoch_E_step_S/model``) of the highest step under the root."""
    found = []
    for candidate in Path(checkpoint_root).glob("epoch_*_step_*"):
        model_dir = candidate / "model"
        if (model_dir / "adapter_model.safetensors").is_file():
            found.append((int(candidate.name.rsplit("_", 1)[1]), model_dir))
    if not found:
        raise FileNotFoundError(f"no adapter checkpoint under {checkpoint_root}")
    return max(found)[1]


def export_adapter(checkpoint: Path, output_dir: Path) -> dict[str, Any]:
    """The checkpoint's HF PEFT adapter files copied into ``output_dir``; its config."""
    output_dir = Path(output_dir)
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    for name in HF_ADAPTER_FILES:
        shutil.copy2(Path(checkpoint) / name, output_dir / name)
    return json.loads((output_dir / "adapter_config.json").read_text(encoding="utf-8"))


def check_nim_adapter(adapter_dir: Path) -> dict[str, Any]:
    """Asserts ``adapter_dir`` is a Hugging Face PEFT LoRA NIM can load; returns its config.
    Module names may be full paths (``model.layers.3.self_attn.q_proj``): NIM matches the
    last component."""
    adapter_dir = Path(adapter_dir)
    missing = [name for name in HF_ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter_dir}: missing {missing} (NIM needs {HF_ADAPTER_FILES})")
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    modules = config.get("target_modules") or []
    modules = [modules] if isinstance(modules, str) else list(modules)
    unsupported = sorted({m.rsplit(".", 1)[-1] for m in modules} - NIM_TARGET_MODULES)
    if unsupported:
        raise ValueError(f"{adapter_dir}: NIM does not support target modules {unsupported}")
    return config


def publish_for_nim(adapter_dir: Path, nim_peft_source: Path, adapter_name: str) -> Path:
    """Copy the adapter to ``<nim_peft_source>/<adapter_name>/`` (NIM's LoRA name = dir name)."""
    check_nim_adapter(adapter_dir)
    target = Path(nim_peft_source) / adapter_name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in HF_ADAPTER_FILES:
        shutil.copy2(Path(adapter_dir) / name, target / name)
    return target


def step_seconds(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean seconds between consecutive optimizer steps, from the recipe's timestamps (so the
    interpreter start, model load and first-step warm-up of torchrun are left out)."""
    stamps = [r.get("timestamp") for r in records]
    if len(stamps) < 2 or not all(stamps):
        return None
    times = [datetime.fromisoformat(str(t).replace("Z", "+00:00")) for t in stamps]
    return (times[-1] - times[0]).total_seconds() / (len(times) - 1)


def _round(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def run_metadata(
    records: Sequence[Mapping[str, Any]],
    validation: Sequence[Mapping[str, Any]],
    job: Mapping[str, Any],
    options: NemoOptions,
    device: str,
    adapter_config: Mapping[str, Any],
    wall_s: float,
    train_s: float,
) -> dict[str, Any]:
    """Plain-value materialization metadata (the keys the ``lora_adapter`` asset reads)."""
    losses = [float(r["loss"]) for r in records]
    steps = len(records)
    per_step = step_seconds(records)
    if per_step is None and steps:
        per_step = train_s / steps
    curve = [
        {"step": int(r.get("step", i)) + 1, "loss": _round(r["loss"])}
        for i, r in enumerate(records)
    ]
    val_curve = [
        {"step": int(r.get("step", 0)) + 1, "loss": _round(r.get("val_loss", r.get("loss")))}
        for r in validation
    ]
    modules = adapter_config.get("target_modules") or []
    return {
        "runner": "nemo-automodel",
        "recipe": RECIPE_CLASS,
        "steps": steps,
        "final_loss": _round(losses[-1]) if losses else None,
        "mean_loss": _round(sum(losses) / len(losses)) if losses else None,
        "seconds_per_step": round(per_step, 4) if per_step is not None else None,
        "torchrun_s": round(train_s, 2),  # workers' start, model load, training, checkpoints
        "wall_s": round(wall_s, 2),
        "device": device,
        "adapter_dir": str(job["output_dir"]),
        "adapter_format": "hf-peft",
        "lora_r": int(adapter_config.get("r", job["lora_r"])),
        "lora_target_modules": len(modules),
        "learning_rate": float(job["learning_rate"]),
        "batch_size": int(job["batch_size"]),
        "warm_start": str(job.get("init_adapter_dir") or "none"),
        "nim_layout": f"$NIM_PEFT_SOURCE/{options.adapter_name}/{{{','.join(HF_ADAPTER_FILES)}}}",
        "loss_curve": {"raw_value": curve, "type": "json"},
        "validation_loss": {"raw_value": val_curve, "type": "json"},
    }


def run(
    job: Mapping[str, Any],
    options: NemoOptions,
    reporter: Any,
    runner: Callable[..., list[dict[str, Any]]] = train,
) -> dict[str, Any]:
    """Fine-tune as ``job`` says and export the adapter; reports and returns the metadata."""
    started = time.monotonic()
    device = resolve_device(options.device)
    recipe = write_recipe(job, options, device)
    _, checkpoints = experiment_paths(options)
    reporter.log.info(
        f"NeMo AutoModel LoRA: {job['max_steps']} steps on {job['base_model_path']} ({device}, "
        f"{options.nproc_per_node} process(es)); recipe {recipe}"
    )
    command = torchrun_command(options, recipe, job.get("init_adapter_dir"))
    env = {**os.environ, "OMP_NUM_THREADS": str(job.get("num_threads") or 1)}
    warm_start = Path(options.experiment_dir) / WARM_START_FILE
    warm_start.unlink(missing_ok=True)
    train_started = time.monotonic()
    records = runner(command, checkpoints / METRICS_FILE, int(job["max_steps"]), reporter.log, env)
    train_s = time.monotonic() - train_started
    config = export_adapter(last_checkpoint(checkpoints), Path(job["output_dir"]))
    validation = read_jsonl(checkpoints / VALIDATION_METRICS_FILE)
    metadata = run_metadata(
        records, validation, job, options, device, config, time.monotonic() - started, train_s
    )
    if warm_start.is_file():
        metadata["warm_start_tensors"] = json.loads(warm_start.read_text())["tensors"]
    reporter.report_asset_materialization(metadata=metadata)
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=Path, help="(torchrun) train one rank from this recipe")
    parser.add_argument("--init-adapter", help="(worker) warm-start LoRA weights")
    parser.add_argument("--job", type=Path, help="job JSON (when not launched by Dagster)")
    parser.add_argument("--nemo", type=Path, help="NemoOptions JSON (when not launched by Dagster)")
    args = parser.parse_args(argv)
    # Launched by NemoSubprocessLauncher: this process and torchrun's workers (which inherit the
    # launcher's pid) die with the Dagster step; torchrun exits once its workers are gone.
    die_with_launcher()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.worker:
        worker(args.worker, args.init_adapter)
        return 0
    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            options = NemoOptions.from_dict(pipes.get_extra("nemo"))
            run(pipes.get_extra("job"), options, pipes)
        return 0
    if args.job is None or args.nemo is None:
        parser.error("not launched by Dagster Pipes: pass --job job.json --nemo nemo.json")
    job = json.loads(args.job.read_text(encoding="utf-8"))
    options = NemoOptions.from_dict(json.loads(args.nemo.read_text(encoding="utf-8")))
    run(job, options, _LocalReporter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
