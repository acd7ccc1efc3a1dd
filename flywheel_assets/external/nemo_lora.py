"""NeMo LoRA fine-tune entry point: runs INSIDE the NeMo environment, speaks Dagster Pipes.

    python -m flywheel_assets.external.nemo_lora

``nemo_toolkit[llm]`` 2.7.x cannot share the orchestrator's venv (see README, "Fine-tuning on
GPU nodes (NeMo)"), so this module imports only the standard library and ``dagster_pipes`` at
module level; NeMo is imported inside ``build_recipe`` / ``run``. It reads two Pipes extras:

- ``job``: ``flywheel_core.ml.finetune_job.FineTuneJob`` as a dict (paths mapped to this
  machine);
- ``nemo``: ``NemoOptions`` as a dict (``dataset_root`` holds the chat-format
  ``training.jsonl`` and ``validation.jsonl`` written by ``flywheel_core.ml.nemo_data``
  on the orchestrator; ``run`` renders them with the base model's chat template into
  ``<experiment_dir>/sft_data`` as ``{"input", "output"}`` rows, loss on the answer only).

Recipe: ``llm.finetune(model, data, trainer, peft=llm.peft.LoRA(...), log, optim, resume)`` on a
Llama-family model; ``build_recipe`` only constructs the objects (no GPU, no download), so it can
be tested wherever NeMo is installed; ``run`` imports the base checkpoint if needed, trains, and
exports the adapter.

Adapter layout (what NIM loads through ``NIM_PEFT_SOURCE``): NIM serves every sub-directory of
``$NIM_PEFT_SOURCE`` as one LoRA named after the directory, in NeMo format (one ``.nemo`` file) or
Hugging Face PEFT format (``adapter_config.json`` + ``adapter_model.safetensors``). We export
the Hugging Face format with ``llm.peft.export_lora`` (NeMo checkpoint -> ``hf-peft``), straight
into ``job["output_dir"]``, so deploying is a copy::

    $NIM_PEFT_SOURCE/<adapter_name>/adapter_config.json
    $NIM_PEFT_SOURCE/<adapter_name>/adapter_model.safetensors

(``publish_for_nim`` does that copy). The NeMo training checkpoints stay in ``experiment_dir``
(outside ``output_dir``): re-running after a crash resumes from the last one
(``AutoResume(resume_if_exists=True)``).

Warm start from the previous cycle's adapter is not supported here yet: NeMo 2.7 cannot load a
Hugging Face PEFT adapter into ``llm.peft.LoRA``; the run starts a fresh LoRA and says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flywheel_core.ml.nemo_options import (
    HF_ADAPTER_FILES,
    MODEL_CONFIGS,
    NIM_TARGET_MODULES,
    NemoOptions,
)

logger = logging.getLogger("flywheel_assets.external.nemo_lora")


def restore_path(base_model: str) -> str:
    """The NeMo checkpoint to restore: ``hf://org/name`` is imported to ``nemo://org/name``."""
    if base_model.startswith("hf://"):
        return "nemo://" + base_model.removeprefix("hf://")
    return base_model


def tokenizer_source(options: NemoOptions, models_cache: str = "$NEMO_MODELS_CACHE") -> str:
    """Where the base model's Hugging Face tokenizer (and its chat template) is loaded from."""
    if options.tokenizer:
        return options.tokenizer
    if options.base_model.startswith("hf://"):
        return options.base_model.removeprefix("hf://")
    path = options.base_model
    if path.startswith("nemo://"):
        path = f"{models_cache}/{path.removeprefix('nemo://')}"
    return f"{path}/context/nemo_tokenizer"  # where import_ckpt saves the HF tokenizer


def sft_data_dir(options: NemoOptions) -> Path:
    """The rendered ``{"input", "output"}`` dataset the recipe trains on."""
    return Path(options.experiment_dir) / "sft_data"


def _chat_template(options: NemoOptions) -> Any:
    from nemo.lightning.base import NEMO_MODELS_CACHE
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(options, str(NEMO_MODELS_CACHE)))

    def apply(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    return apply


def _model(options: NemoOptions) -> Any:
    from nemo.collections import llm

    if options.model_config not in MODEL_CONFIGS:
        raise ValueError(
            f"model_config={options.model_config!r}; expected one of {sorted(MODEL_CONFIGS)}"
        )
    return llm.LlamaModel(getattr(llm, MODEL_CONFIGS[options.model_config])())


def _progress_callback(log: Any) -> Any:
    """A Lightning callback that streams the training loss to ``log`` and keeps it."""
    from lightning.pytorch.callbacks import Callback

    class PipesProgress(Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.started = time.monotonic()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = trainer.callback_metrics.get("reduced_train_loss")
            if loss is None:
                return
            self.losses.append(float(loss))
            log.info(f"step {trainer.global_step}/{trainer.max_steps} loss {float(loss):.4f}")

    return PipesProgress()


def build_recipe(job: Mapping[str, Any], options: NemoOptions, log: Any = logger) -> dict[str, Any]:
    """The keyword arguments of ``llm.finetune`` (plus ``progress``): construction only."""
    from megatron.core.optimizer import OptimizerConfig
    from nemo import lightning as nl
    from nemo.collections import llm

    progress = _progress_callback(log)
    bf16 = options.precision.startswith("bf16")
    trainer = nl.Trainer(
        devices=options.devices,
        num_nodes=options.num_nodes,
        accelerator=options.accelerator,
        max_steps=int(job["max_steps"]),
        strategy=nl.MegatronStrategy(tensor_model_parallel_size=options.tensor_parallel),
        plugins=nl.MegatronMixedPrecision(precision=options.precision),
        log_every_n_steps=1,
        val_check_interval=min(options.val_check_interval, int(job["max_steps"])),
        limit_val_batches=options.limit_val_batches,
        num_sanity_val_steps=0,
    )
    # Added after construction: nl.Trainer records its init arguments for the checkpoint
    # context (io_dump), and this callback (holding the Pipes log) is not serialisable.
    trainer.callbacks.append(progress)
    data = llm.FineTuningDataModule(
        dataset_root=str(sft_data_dir(options)),
        seq_length=options.seq_length,
        micro_batch_size=options.micro_batch_size,
        global_batch_size=int(job["batch_size"]),
        seed=int(job["seed"]),
        num_workers=options.num_workers,
        # input = templated prompt, output = answer: loss on the answer only (see nemo_data).
        dataset_kwargs={"prompt_template": "{input}{output}", "answer_only_loss": True},
    )
    peft = llm.peft.LoRA(
        target_modules=list(options.target_modules),
        dim=int(job["lora_r"]),
        alpha=int(job["lora_alpha"]),
        dropout=float(job["lora_dropout"]),
    )
    optim = nl.MegatronOptimizerModule(
        config=OptimizerConfig(
            optimizer="adam",
            lr=float(job["learning_rate"]),
            bf16=bf16,
            clip_grad=1.0,
            use_distributed_optimizer=False,
        )
    )
    checkpoint = nl.ModelCheckpoint(
        save_last=True,
        save_top_k=1,
        monitor="reduced_train_loss",
        every_n_train_steps=options.checkpoint_every,
    )
    log_cfg = nl.NeMoLogger(
        name=options.adapter_name,
        log_dir=options.experiment_dir,
        use_datetime_version=False,  # a fixed directory: a re-run finds the last checkpoint
        ckpt=checkpoint,
    )
    resume = nl.AutoResume(
        restore_config=nl.RestoreConfig(path=restore_path(options.base_model)),
        resume_if_exists=True,
        resume_ignore_no_checkpoint=True,
    )
    return {
        "model": _model(options),
        "data": data,
        "trainer": trainer,
        "peft": peft,
        "log": log_cfg,
        "optim": optim,
        "resume": resume,
        "progress": progress,
    }


def last_checkpoint(experiment_dir: Path) -> Path:
    """The newest ``*-last`` checkpoint directory NeMo wrote under ``experiment_dir``."""
    found = [p for p in Path(experiment_dir).rglob("*-last") if p.is_dir()]
    if not found:
        raise FileNotFoundError(f"no '*-last' checkpoint under {experiment_dir}")
    return max(found, key=lambda p: p.stat().st_mtime)


def check_nim_adapter(adapter_dir: Path) -> dict[str, Any]:
    """Asserts ``adapter_dir`` is a Hugging Face PEFT LoRA NIM can load; returns its config."""
    adapter_dir = Path(adapter_dir)
    missing = [name for name in HF_ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter_dir}: missing {missing} (NIM needs {HF_ADAPTER_FILES})")
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    modules = config.get("target_modules") or []
    modules = [modules] if isinstance(modules, str) else list(modules)
    unsupported = sorted(set(modules) - NIM_TARGET_MODULES)
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


def _import_base(model: Any, options: NemoOptions, log: Any) -> None:
    """Import a Hugging Face checkpoint once (NEMO_HOME cache); later runs reuse it."""
    if not options.base_model.startswith("hf://"):
        return
    from nemo.collections import llm

    log.info(f"importing {options.base_model} -> {restore_path(options.base_model)}")
    llm.import_ckpt(model=model, source=options.base_model, overwrite=False)


def _prepare_inputs(options: NemoOptions, log: Any) -> None:
    """Import the base checkpoint and render the dataset (rank 0, before other ranks start)."""
    from flywheel_core.ml.nemo_data import render_completion_dataset

    _import_base(_model(options), options, log)
    counts = render_completion_dataset(
        Path(options.dataset_root), sft_data_dir(options), _chat_template(options)
    )
    log.info(f"rendered with the base model's chat template: {counts}")


def _export(job: Mapping[str, Any], options: NemoOptions, log: Any) -> dict[str, Any]:
    """The last checkpoint as a Hugging Face PEFT adapter in ``output_dir``; its config."""
    from nemo.collections import llm

    checkpoint = last_checkpoint(Path(options.experiment_dir))
    output_dir = Path(job["output_dir"])
    shutil.rmtree(output_dir, ignore_errors=True)
    log.info(f"exporting {checkpoint} to Hugging Face PEFT format in {output_dir}")
    llm.peft.export_lora(lora_checkpoint_path=str(checkpoint), output_path=str(output_dir))
    return check_nim_adapter(output_dir)


def run(
    job: Mapping[str, Any], options: NemoOptions, log: Any = logger, rank_zero: bool = True
) -> dict[str, Any]:
    """Fine-tune and (rank 0) export the adapter to ``job['output_dir']``; the run's metadata.

    Lightning starts the other ranks from inside ``llm.finetune`` on rank 0, so the base import
    and the rendered dataset exist before they run; they only train.
    """
    from nemo.collections import llm

    started = time.monotonic()
    if job.get("init_adapter_dir") and rank_zero:
        log.warning(
            "warm start from a previous adapter is not supported by the NeMo runner: "
            "training a fresh LoRA"
        )
    if rank_zero:
        _prepare_inputs(options, log)
    recipe = build_recipe(job, options, log)
    progress = recipe.pop("progress")
    llm.finetune(**recipe)
    if not rank_zero:
        return {}
    config = _export(job, options, log)
    return run_metadata(progress.losses, job, options, config, time.monotonic() - started)


def run_metadata(
    losses: list[float],
    job: Mapping[str, Any],
    options: NemoOptions,
    adapter_config: Mapping[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    """Plain-value materialization metadata (the keys the ``lora_adapter`` asset reads)."""
    return {
        "runner": "nemo",
        "steps": int(job["max_steps"]),
        "final_loss": round(losses[-1], 6) if losses else float("nan"),
        "mean_loss": round(sum(losses) / len(losses), 6) if losses else float("nan"),
        "wall_s": round(wall_s, 2),
        "adapter_dir": str(job["output_dir"]),
        "adapter_format": "hf-peft",
        "nim_layout": f"$NIM_PEFT_SOURCE/{options.adapter_name}/{{{','.join(HF_ADAPTER_FILES)}}}",
        "lora_target_modules": ",".join(adapter_config.get("target_modules") or []),
        "base_model": options.base_model,
        "warm_start": "unsupported (fresh LoRA)" if job.get("init_adapter_dir") else "none",
    }


def is_rank_zero(env: Mapping[str, str] = os.environ) -> bool:
    """Only the first process of a multi-GPU run talks to Dagster."""
    return all(env.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def _extras_without_pipes() -> Mapping[str, Any]:
    """The Pipes extras, read-only: for the ranks that must not open the Pipes channel."""
    from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader

    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        return data["extras"]


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    if not is_rank_zero():
        # Lightning re-runs this module once per extra GPU; only rank 0 talks to Dagster.
        extras = _extras_without_pipes()
        run(extras["job"], NemoOptions.from_dict(extras["nemo"]), rank_zero=False)
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        job = pipes.get_extra("job")
        options = NemoOptions.from_dict(pipes.get_extra("nemo"))
        pipes.log.info(f"NeMo LoRA: {job['max_steps']} steps on {options.base_model}")
        metadata = run(job, options, pipes.log)
        pipes.report_asset_materialization(metadata=metadata)


if __name__ == "__main__":
    main()
