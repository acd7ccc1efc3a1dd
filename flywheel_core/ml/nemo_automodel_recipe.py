"""The NeMo AutoModel LoRA recipe's YAML, generated from the same FineTuneJob as the PEFT recipe.

``automodel_config`` returns the config of nemo_automodel 0.7.0's
``TrainFinetuneRecipeForNextTokenPrediction`` (the stock LLM fine-tune recipe, which the runner
starts with ``torchrun``). Precedence, lowest first:

1. the template ``recipes/nemo_automodel_lora.yaml`` (loss, dataloaders, LoRA init, schedule
   shape, checkpoint format);
2. the PEFT recipe's defaults ``recipes/lora_cpu.yaml`` for what the job does not carry
   (target modules, warmup, weight decay, gradient clipping), then the job itself: the
   `training` settings (rank, alpha, dropout, learning rate, batch, seed, top-N layers), the
   step budget, the student's model and prompt length. Both runners read the same values;
3. the machine: ``cpu`` trains with the gloo backend, ``cuda`` with NCCL and the Triton LoRA
   kernel. The FSDP2 compute dtype follows the job's ``dtype`` like the PEFT recipe's:
   ``auto`` is bf16 on CUDA and on a CPU with native bf16 (avx512_bf16 / AMX), else fp32 (NeMo's
   default bf16 policy is ~15x slower on a CPU without native bf16); gradients are reduced in
   fp32 and the master weights stay fp32;
4. the NeMo options' ``recipe`` file, then their dotlist ``overrides``.

Warm start: with ``init_adapter`` (the previous cycle's ``adapter_config.json``), the LoRA's
rank, alpha and modules are the adapter's, so its weights load into the new LoRA unchanged.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from flywheel_core.ml.nemo_data import TRAINING_FILE, VALIDATION_FILE
from flywheel_core.ml.nemo_options import NemoOptions
from flywheel_core.settings import parse_dotlist

# Not imported from flywheel_core.ml.recipe, which loads the PEFT trainer (torch, peft).
RECIPES_DIR = Path(__file__).with_name("recipes")
PEFT_RECIPE = RECIPES_DIR / "lora_cpu.yaml"
TEMPLATE = RECIPES_DIR / "nemo_automodel_lora.yaml"
RECIPE_CLASS = "nemo_automodel.recipes.llm.train_ft.TrainFinetuneRecipeForNextTokenPrediction"
CHECKPOINTS = "checkpoints"
DEVICE_SETTINGS = {
    # backend, Triton LoRA kernel
    "cpu": ("gloo", False),
    "cuda": ("nccl", True),
}


def compute_dtype(dtype: str, device: str, native_bf16: bool) -> str:
    """The FSDP2 param (compute) dtype for the job's ``dtype`` setting on ``device``."""
    if dtype in ("float32", "bfloat16"):
        return dtype
    return "bfloat16" if device == "cuda" or native_bf16 else "float32"


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, mappings recursively (neither is modified)."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def trained_layers(layers_to_train: int | None, num_layers: int | None) -> list[int] | None:
    """Indices of the top ``layers_to_train`` decoder layers; None = all layers."""
    if layers_to_train is None or num_layers is None or layers_to_train >= num_layers:
        return None
    return list(range(num_layers - layers_to_train, num_layers))


def lora_patterns(target_modules: Sequence[str], layers: Sequence[int] | None) -> list[str]:
    """PeftConfig ``target_modules`` wildcards (matched against full module names, so a bare
    ``q_proj`` would match nothing): every layer's modules, or the top layers' only."""
    if layers is None:
        return [f"*.{module}" for module in target_modules]
    return [f"*.layers.{i}.*.{module}" for i in layers for module in target_modules]


def adapter_lora(adapter_config: Mapping[str, Any]) -> dict[str, Any]:
    """The LoRA shape of an HF PEFT adapter (rank, alpha, modules, layers), for a warm start."""
    modules = adapter_config.get("target_modules") or []
    modules = [modules] if isinstance(modules, str) else list(modules)
    short = sorted({m.rsplit(".", 1)[-1] for m in modules})
    layers = adapter_config.get("layers_to_transform")
    if layers is None and any(".layers." in m for m in modules):
        layers = sorted({int(m.split(".layers.")[1].split(".")[0]) for m in modules})
    layers = [layers] if isinstance(layers, int) else layers
    return {
        "dim": int(adapter_config["r"]),
        "alpha": int(adapter_config["lora_alpha"]),
        "target_modules": lora_patterns(short, layers),
    }


def num_hidden_layers(model_dir: str | Path) -> int | None:
    """Decoder layers of a local HF model dir (None when its config.json is not readable)."""
    path = Path(model_dir) / "config.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["num_hidden_layers"])
    except (OSError, KeyError, ValueError):
        return None


def automodel_config(
    job: Mapping[str, Any],
    options: NemoOptions,
    device: str,
    world_size: int = 1,
    init_adapter: Mapping[str, Any] | None = None,
    validation: bool = True,
    native_bf16: bool = False,
) -> dict[str, Any]:
    """The recipe config (a plain dict, written as YAML) for ``job`` on ``device``; without
    ``validation`` (an empty validation split) the recipe has no validation dataset."""
    if device not in DEVICE_SETTINGS:
        raise ValueError(f"device={device!r}; expected one of {sorted(DEVICE_SETTINGS)}")
    backend, use_triton = DEVICE_SETTINGS[device]
    peft_defaults = yaml.safe_load(PEFT_RECIPE.read_text(encoding="utf-8")) or {}
    settings = {**peft_defaults, **dict(job)}
    steps = int(settings["max_steps"])
    batch = int(settings["batch_size"])
    if batch % world_size:
        raise ValueError(f"batch_size={batch} is not divisible by {world_size} processes")
    n_layers = num_hidden_layers(job["base_model_path"])
    layers = trained_layers(settings.get("layers_to_train"), n_layers)
    lora = {
        "dim": int(settings["lora_r"]),
        "alpha": int(settings["lora_alpha"]),
        "target_modules": lora_patterns(settings["target_modules"], layers),
    }
    if init_adapter is not None:
        lora = adapter_lora(init_adapter)
    data_root = Path(options.dataset_root)
    tokenizer = {
        "_target_": "transformers.AutoTokenizer.from_pretrained",
        "pretrained_model_name_or_path": str(job["base_model_path"]),
    }

    def dataset(name: str) -> dict[str, Any]:
        return {
            "path_or_dataset_id": str(data_root / name),
            "max_prompt_tokens": int(settings["max_prompt_tokens"]),
            "max_explanation_tokens": int(settings["max_explanation_tokens"]),
            "loss": str(settings["loss"]),
            "tokenizer": dict(tokenizer),
        }

    max_norm = settings.get("max_grad_norm")
    filled = {
        "seed": int(settings["seed"]),
        "dist_env": {"backend": backend},
        "rng": {
            "_target_": "nemo_automodel.components.training.rng.StatefulRNG",
            "seed": int(settings["seed"]),
            "ranked": True,
        },
        "model": {
            "pretrained_model_name_or_path": str(job["base_model_path"]),
            "torch_dtype": "float32",  # fp32 master weights; compute dtype from mp_policy
        },
        "peft": {**lora, "dropout": float(settings["lora_dropout"]), "use_triton": use_triton},
        "distributed": {
            "mp_policy": {
                "param_dtype": compute_dtype(str(settings["dtype"]), device, native_bf16),
                "reduce_dtype": "float32",
                "output_dtype": "float32",
            }
        },
        "step_scheduler": {
            "global_batch_size": batch,
            "local_batch_size": batch // world_size,
            "max_steps": steps,
            "ckpt_every_steps": int(settings["checkpoint_every"]),
            "val_every_steps": int(options.val_every_steps or steps),
        },
        "optimizer": {
            "lr": float(settings["learning_rate"]),
            "weight_decay": float(settings["weight_decay"]),
        },
        "lr_scheduler": {"lr_warmup_steps": min(int(settings["warmup_steps"]), steps - 1)},
        # The PEFT recipe's null (no clipping) is an infinite norm here: the recipe's own
        # default for a missing value would be 1.0.
        "clip_grad_norm": {"max_norm": math.inf if max_norm is None else float(max_norm)},
        "dataset": dataset(TRAINING_FILE),
        "validation_dataset": dataset(VALIDATION_FILE),
        "checkpoint": {"checkpoint_dir": str(Path(options.experiment_dir) / CHECKPOINTS)},
    }
    template = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8")) or {}
    config = deep_merge(template, filled)
    if not validation:
        for key in ("validation_dataset", "validation_dataloader"):
            config.pop(key, None)
        config["step_scheduler"]["val_every_steps"] = None
    if options.recipe:
        path = Path(options.recipe)
        if not path.is_file():
            raise FileNotFoundError(f"NeMo recipe file {path} does not exist")
        config = deep_merge(config, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return deep_merge(config, parse_dotlist(options.overrides))
