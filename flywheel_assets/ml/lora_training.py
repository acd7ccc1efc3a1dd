"""LoRA fine-tuning of the student on severity labels, on CPU.

Loss: completion-only cross-entropy. Each example is ``prompt + <label>"} + eos``; only the
completion tokens carry loss. Each example's mean token loss is multiplied by its ``weight`` and
the batch loss is the weighted mean ``sum(w_i * l_i) / sum(w_i)``, so a weight-0 example is
exactly like an absent one (no loss, no gradient).

Cost levers (see the measurements in the module's report):
- length-bucketed batches: examples are shuffled, sorted by length within large chunks and cut
  into batches, so right padding wastes little;
- ``layers_to_train``: LoRA only on the top N decoder layers, so backward stops there;
- ``lm_head`` is applied only at the positions that carry loss (the decoder's hidden states are
  gathered first), instead of materialising full-vocabulary logits for every position;
- ``dtype="bfloat16"`` runs the forward/backward under CPU bf16 autocast (LoRA weights and
  AdamW state stay fp32); only worth it on CPUs with avx512_bf16 / AMX, which ``"auto"`` checks.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from flywheel_assets.ml.base_model import load_tokenizer
from flywheel_assets.ml.scoring import logits_at, pad_right
from flywheel_assets.ml.severity_prompt import (
    SEVERITIES,
    build_prompt,
    completion_ids,
    label_first_token_ids,
)

logger = logging.getLogger(__name__)

LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_BUCKET_BATCHES = 32  # batches per length-sorted chunk


class TrainConfig(BaseModel):
    """Everything one LoRA training run needs (serialisable: it travels through Pipes extras)."""

    model_config = ConfigDict(extra="forbid")

    base_model_path: Path
    output_dir: Path
    init_adapter_dir: Path | None = None  # warm start from this adapter; None = fresh LoRA
    lora_r: int = Field(16, ge=1)
    lora_alpha: float = 32.0
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_LINEAR_MODULES))
    layers_to_train: int | None = Field(None, ge=1)  # top N decoder layers only; None = all
    learning_rate: float = Field(5e-4, gt=0.0)
    batch_size: int = Field(8, ge=1)
    max_steps: int = Field(150, ge=1)
    max_prompt_tokens: int = Field(256, ge=32)
    seed: int = 0
    num_threads: int | None = Field(None, ge=1)  # None = leave torch's setting alone
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(5, ge=0)
    max_grad_norm: float | None = 1.0
    # "auto": bf16 autocast when the CPU has native bf16 (avx512_bf16 / amx_bf16), else fp32.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # "completion": cross-entropy over every completion token (`<label>"}` + eos).
    # "label": cross-entropy over the four labels' first tokens at the answer position only,
    # the objective that matches how the student is scored (see scoring.py); still no loss on
    # the prompt.
    loss: Literal["completion", "label"] = "label"


class Encoded(BaseModel):
    """One tokenised training example."""

    ids: list[int]  # prompt + completion
    prompt_len: int
    weight: float
    label: int  # index of the severity in SEVERITIES


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[dict[str, Any]], max_prompt_tokens: int
) -> list[Encoded]:
    """Tokenise ``{code, review, severity, weight}`` examples into prompt + completion ids."""
    encoded = []
    for ex in examples:
        prompt = build_prompt(tokenizer, ex["code"] or "", ex["review"], max_prompt_tokens)
        completion = completion_ids(tokenizer, ex["severity"])
        weight = float(ex.get("weight", 1.0))
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"example weight must be finite and >= 0, got {weight}")
        encoded.append(
            Encoded(
                ids=prompt + completion,
                prompt_len=len(prompt),
                weight=weight,
                label=SEVERITIES.index(ex["severity"]),
            )
        )
    return encoded


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> Iterator[list[int]]:
    """Endless stream of index batches of similar length, reshuffled every epoch."""
    if not lengths:
        raise ValueError("no training examples")
    chunk = batch_size * _BUCKET_BATCHES
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
            batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        rng.shuffle(batches)
        yield from batches


def _weighted_mean(per_example: torch.Tensor, batch: Sequence[Encoded]) -> torch.Tensor:
    weights = torch.tensor([ex.weight for ex in batch])
    return (weights * per_example).sum() / weights.sum().clamp_min(1e-12)


def label_loss(
    model: torch.nn.Module, batch: Sequence[Encoded], pad_id: int, label_ids: Sequence[int]
) -> torch.Tensor:
    """Weighted 4-way cross-entropy over the labels' first tokens at the answer position."""
    input_ids, mask = pad_right([ex.ids[: ex.prompt_len] for ex in batch], pad_id)
    rows = torch.arange(len(batch))
    cols = torch.tensor([ex.prompt_len - 1 for ex in batch])
    logits = logits_at(model, input_ids, mask, rows, cols)[:, list(label_ids)]
    targets = torch.tensor([ex.label for ex in batch])
    per_example = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return _weighted_mean(per_example, batch)


def batch_loss(model: torch.nn.Module, batch: Sequence[Encoded], pad_id: int) -> torch.Tensor:
    """Weighted completion-only loss of one batch (logits only at the loss positions)."""
    input_ids, mask = pad_right([ex.ids[:-1] for ex in batch], pad_id)
    rows, cols, targets = [], [], []
    for row, ex in enumerate(batch):
        for pos in range(ex.prompt_len - 1, len(ex.ids) - 1):
            rows.append(row)
            cols.append(pos)
            targets.append(ex.ids[pos + 1])
    row_t = torch.tensor(rows)
    logits = logits_at(model, input_ids, mask, row_t, torch.tensor(cols))
    token_loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets), reduction="none")
    per_example = torch.zeros(len(batch)).index_add(0, row_t, token_loss)
    counts = torch.zeros(len(batch)).index_add(0, row_t, torch.ones_like(token_loss))
    return _weighted_mean(per_example / counts, batch)


def build_peft_model(config: TrainConfig) -> torch.nn.Module:
    """Base model with a fresh LoRA (on the top ``layers_to_train`` layers) or a warm-started one.

    A warm start keeps the adapter's own LoRA settings (r, alpha, targets, layers).
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(config.base_model_path, dtype=torch.float32)
    if config.init_adapter_dir is not None:
        logger.info("warm start from adapter %s", config.init_adapter_dir)
        return PeftModel.from_pretrained(base, config.init_adapter_dir, is_trainable=True)
    n_layers = base.config.num_hidden_layers
    layers = None
    if config.layers_to_train is not None and config.layers_to_train < n_layers:
        layers = list(range(n_layers - config.layers_to_train, n_layers))
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        remaining = config.max_steps - config.warmup_steps
        return max(0.0, 1.0 - (step - config.warmup_steps) / max(1, remaining))

    return factor


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU advertises native bf16 matmuls (avx512_bf16 or amx_bf16)."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def effective_dtype(config: TrainConfig) -> str:
    """The compute dtype a run will use ("auto" resolved)."""
    if config.dtype != "auto":
        return config.dtype
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(
    config: TrainConfig, params: list[torch.nn.Parameter]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))


def _train_loop(
    config: TrainConfig,
    model: torch.nn.Module,
    data: list[Encoded],
    tokenizer: PreTrainedTokenizerBase,
    on_step: Callable[[int, float], None] | None,
) -> tuple[list[float], int]:
    """Run ``max_steps`` optimiser steps; returns per-step losses and input tokens processed."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(config, params)
    batches = length_bucketed_batches(
        [len(ex.ids) for ex in data], config.batch_size, random.Random(config.seed)
    )
    pad_id = tokenizer.pad_token_id
    if config.loss == "label":
        label_ids = label_first_token_ids(tokenizer)

        def loss_fn(batch: Sequence[Encoded]) -> torch.Tensor:
            return label_loss(model, batch, pad_id, label_ids)
    else:

        def loss_fn(batch: Sequence[Encoded]) -> torch.Tensor:
            return batch_loss(model, batch, pad_id)

    dtype = effective_dtype(config)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else nullcontext()
    losses: list[float] = []
    tokens = 0
    model.train()
    for step in range(1, config.max_steps + 1):
        batch = [data[i] for i in next(batches)]
        with autocast:
            loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        tokens += sum(ex.prompt_len if config.loss == "label" else len(ex.ids) - 1 for ex in batch)
        if on_step is not None:
            on_step(step, losses[-1])
    return losses, tokens


def train_lora(
    config: TrainConfig,
    examples: Sequence[dict[str, Any]],
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``examples`` and save it to ``config.output_dir``.

    ``on_step(step, loss)`` is called after every optimiser step (1-based). Returns metrics:
    steps, final_loss, mean_loss, losses, train_tokens, tokens_per_s, seconds_per_step, wall_s,
    trainable_params, dtype, output_dir.
    """
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    start = time.perf_counter()
    _seed_everything(config.seed)
    tokenizer = load_tokenizer(config.base_model_path)
    data = encode_examples(tokenizer, examples, config.max_prompt_tokens)
    model = build_peft_model(config)
    logger.info(
        "training %d examples, compute dtype %s, %d threads",
        len(data),
        effective_dtype(config),
        torch.get_num_threads(),
    )
    loop_start = time.perf_counter()
    losses, tokens = _train_loop(config, model, data, tokenizer, on_step)
    loop_s = time.perf_counter() - loop_start
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    return {
        "steps": len(losses),
        "final_loss": losses[-1],
        "mean_loss": sum(losses) / len(losses),
        "losses": losses,
        "train_tokens": tokens,
        "tokens_per_s": tokens / loop_s if loop_s > 0 else 0.0,
        "seconds_per_step": loop_s / len(losses),
        "wall_s": time.perf_counter() - start,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "dtype": effective_dtype(config),
        "output_dir": str(output_dir),
    }
