"""LoRA fine-tuning of the student on severity labels (and explanations), on CPU.

Multi-task: a curriculum row with a reference ``explanation`` also yields an explanation
example (the explanation prompt + the reference, completion loss over the reference tokens).
The batch stream is over severity examples, so the severity task gets exactly the updates it
would get alone; each step adds the explanation examples of up to ``explanation_batch_size`` of
its rows, each weighted ``explanation_weight`` x the row's weight (0 = severity only).

Loss: completion-only cross-entropy. Each example is ``prompt + <label>"} + eos``; only the
completion tokens carry loss. Each example's mean token loss is multiplied by its ``weight`` and
the batch loss is the weighted mean ``sum(w_i * l_i) / sum(w_i)``, so a weight-0 example is
exactly like an absent one (no loss, no gradient).

Replay: when the examples mark the cycle's new ones (``new``), every batch holds
``new_per_batch(batch_size, replay_share)`` new examples and fills the rest from the earlier ones,
so a cycle learns its new data without forgetting the old (``teaching/step_budget.py`` sizes the
run); examples without the mark train in plain length-bucketed batches.

Cost levers (see the measurements in the module's report):
- length-bucketed batches: examples are shuffled, sorted by length within large chunks and cut
  into batches, so right padding wastes little;
- ``layers_to_train``: LoRA only on the top N decoder layers, so backward stops there;
- ``lm_head`` is applied only at the positions that carry loss (the decoder's hidden states are
  gathered first), instead of materialising full-vocabulary logits for every position;
- ``dtype="bfloat16"`` runs the forward/backward under bf16 autocast (LoRA weights and
  AdamW state stay fp32); on CPU only worth it with avx512_bf16 / AMX, which ``"auto"`` checks;
  on CUDA (``device="auto"`` picks it when present) ``"auto"`` means bf16 where supported.

Robustness: with ``checkpoint_dir`` set, every ``checkpoint_every`` steps the LoRA weights,
optimizer, scheduler, RNG states and loop state (step = position in the batch stream) are saved
atomically, and a new run with the same config and data resumes from the latest checkpoint and
ends with the same adapter as an uninterrupted run. With ``eval_every > 0`` a hash-selected
validation split (``early_stopping.py``) is scored at step 0, every ``eval_every`` steps and at
the end; the run stops after ``patience`` evaluations without improvement and the saved adapter
is the best one on validation.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from flywheel_core.ml.adapter_files import canonicalize_adapter_config
from flywheel_core.ml.base_model import load_tokenizer
from flywheel_core.ml.checkpoints import (
    load_latest_checkpoint,
    load_trainable_state,
    restore_rng_state,
    rng_state,
    run_fingerprint,
    save_checkpoint,
    trainable_state,
)
from flywheel_core.ml.early_stopping import EarlyStopping, split_validation
from flywheel_core.ml.explanation_prompt import build_explain_prompt, explanation_completion_ids
from flywheel_core.ml.hardware import cpu_has_native_bf16
from flywheel_core.ml.scoring import logits_at, pad_right
from flywheel_core.ml.severity_prompt import (
    SEVERITIES,
    build_prompt,
    completion_ids,
    label_first_token_ids,
)
from flywheel_core.settings import LoraSettings
from flywheel_core.teaching.step_budget import new_per_batch

logger = logging.getLogger(__name__)

LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_BUCKET_BATCHES = 32  # batches per length-sorted chunk


class TrainConfig(LoraSettings):
    """Everything one LoRA training run needs (serialisable: it travels through Pipes extras).

    The LoRA hyperparameters are the flywheel's `LoraSettings`; these are the recipe's own."""

    base_model_path: Path
    output_dir: Path
    init_adapter_dir: Path | None = None  # warm start from this adapter; None = fresh LoRA
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_LINEAR_MODULES))
    max_steps: int = Field(150, ge=1)
    max_prompt_tokens: int = Field(256, ge=32)
    num_threads: int | None = Field(None, ge=1)  # None = leave torch's setting alone
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(5, ge=0)
    max_grad_norm: float | None = 1.0
    # "auto": CUDA when available (model and batches on the GPU), else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_dir: Path | None = None  # save + resume here; None = no checkpoints
    min_validation_examples: int = Field(4, ge=1)  # fewer held back -> no validation at all


# Fields that do not change what a run computes (left out of its fingerprint).
_NOT_FINGERPRINTED = {"output_dir", "checkpoint_dir", "num_threads"}


class Encoded(BaseModel):
    """One tokenised training example."""

    ids: list[int]  # prompt + completion
    prompt_len: int
    weight: float
    label: int  # index of the severity in SEVERITIES
    task: Literal["severity", "explanation"] = "severity"
    new: bool = False  # added by the cycle being trained (batches mix new and replayed ones)


def _weight_of(ex: dict[str, Any]) -> float:
    weight = float(ex.get("weight", 1.0))
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"example weight must be finite and >= 0, got {weight}")
    return weight


def encode_explanations(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[dict[str, Any]],
    max_prompt_tokens: int,
    weight: float,
    max_explanation_tokens: int,
) -> list[Encoded | None]:
    """One explanation example per row that has a reference ``explanation`` (else None)."""
    encoded: list[Encoded | None] = []
    for ex in examples:
        text = (ex.get("explanation") or "").strip()
        if weight <= 0 or not text:
            encoded.append(None)
            continue
        code, review, severity = ex["code"] or "", ex["review"], ex["severity"]
        prompt = build_explain_prompt(tokenizer, code, review, severity, max_prompt_tokens)
        completion = explanation_completion_ids(tokenizer, text, max_explanation_tokens)
        encoded.append(
            Encoded(
                ids=prompt + completion,
                prompt_len=len(prompt),
                weight=_weight_of(ex) * weight,
                label=SEVERITIES.index(severity),
                task="explanation",
            )
        )
    return encoded


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[dict[str, Any]], max_prompt_tokens: int
) -> list[Encoded]:
    """Tokenise ``{code, review, severity, weight}`` examples into prompt + completion ids."""
    encoded = []
    for ex in examples:
        prompt = build_prompt(tokenizer, ex["code"] or "", ex["review"], max_prompt_tokens)
        completion = completion_ids(tokenizer, ex["severity"])
        weight = _weight_of(ex)
        encoded.append(
            Encoded(
                ids=prompt + completion,
                prompt_len=len(prompt),
                weight=weight,
                label=SEVERITIES.index(ex["severity"]),
                new=bool(ex.get("new", False)),
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


def _shuffled_forever(indices: Sequence[int], rng: random.Random) -> Iterator[int]:
    while True:
        order = list(indices)
        rng.shuffle(order)
        yield from order


def replay_mixed_batches(
    data: Sequence[Encoded], batch_size: int, replay_share: float, rng: random.Random
) -> Iterator[list[int]]:
    """Batches of ``new_per_batch`` new examples + earlier ones (replay), each stream reshuffled
    every pass; plain length-bucketed batches when the data is not split into new and earlier."""
    new = [i for i, ex in enumerate(data) if ex.new]
    old = [i for i, ex in enumerate(data) if not ex.new]
    if not new or not old:
        yield from length_bucketed_batches([len(ex.ids) for ex in data], batch_size, rng)
        return
    k_new = new_per_batch(batch_size, replay_share)
    new_stream, old_stream = _shuffled_forever(new, rng), _shuffled_forever(old, rng)
    while True:
        batch = [next(new_stream) for _ in range(k_new)]
        batch += [next(old_stream) for _ in range(batch_size - k_new)]
        yield sorted(batch, key=lambda i: len(data[i].ids))


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _weighted_mean(per_example: torch.Tensor, batch: Sequence[Encoded]) -> torch.Tensor:
    weights = torch.tensor([ex.weight for ex in batch], device=per_example.device)
    return (weights * per_example).sum() / weights.sum().clamp_min(1e-12)


def label_loss(
    model: torch.nn.Module, batch: Sequence[Encoded], pad_id: int, label_ids: Sequence[int]
) -> torch.Tensor:
    """Weighted 4-way cross-entropy over the labels' first tokens at the answer position."""
    device = _device_of(model)
    input_ids, mask = pad_right([ex.ids[: ex.prompt_len] for ex in batch], pad_id)
    rows = torch.arange(len(batch), device=device)
    cols = torch.tensor([ex.prompt_len - 1 for ex in batch], device=device)
    logits = logits_at(model, input_ids.to(device), mask.to(device), rows, cols)
    logits = logits[:, list(label_ids)]
    targets = torch.tensor([ex.label for ex in batch], device=device)
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
    device = _device_of(model)
    row_t = torch.tensor(rows, device=device)
    col_t = torch.tensor(cols, device=device)
    logits = logits_at(model, input_ids.to(device), mask.to(device), row_t, col_t)
    target_t = torch.tensor(targets, device=device)
    token_loss = torch.nn.functional.cross_entropy(logits, target_t, reduction="none")
    per_example = torch.zeros(len(batch), device=device).index_add(0, row_t, token_loss)
    counts = torch.zeros(len(batch), device=device).index_add(0, row_t, torch.ones_like(token_loss))
    return _weighted_mean(per_example / counts, batch)


def combined_loss(parts: Sequence[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """Weighted mean over several sub-batches, from each one's weighted mean and weight sum."""
    total = sum(weight for _, weight in parts)
    return sum(loss * weight for loss, weight in parts) / max(total, 1e-12)


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


def resolve_device(config: TrainConfig) -> str:
    """The device a run will use ("auto" resolved)."""
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device")
    return config.device


def effective_dtype(config: TrainConfig) -> str:
    """The compute dtype a run will use ("auto" resolved for its device)."""
    if config.dtype != "auto":
        return config.dtype
    if resolve_device(config) == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def _autocast(config: TrainConfig) -> Any:
    if effective_dtype(config) != "bfloat16":
        return nullcontext()
    return torch.autocast(resolve_device(config), dtype=torch.bfloat16)


def set_threads(num_threads: int | None) -> None:
    """Intra-op threads as configured, one inter-op thread (LoRA steps are one op chain)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op of the process
        pass


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(
    config: TrainConfig, params: list[torch.nn.Parameter]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))


def _loss_fn(
    config: TrainConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase
) -> Callable[[Sequence[Encoded]], torch.Tensor]:
    pad_id = tokenizer.pad_token_id
    if config.loss == "label":
        label_ids = label_first_token_ids(tokenizer)
        return lambda batch: label_loss(model, batch, pad_id, label_ids)
    return lambda batch: batch_loss(model, batch, pad_id)


def validation_loss(
    loss_fn: Callable[[Sequence[Encoded]], torch.Tensor],
    model: torch.nn.Module,
    data: Sequence[Encoded],
    batch_size: int,
    autocast: Any,
) -> float:
    """Weighted mean loss over ``data`` in eval mode (no dropout, no gradients)."""
    order = sorted(range(len(data)), key=lambda i: len(data[i].ids))
    total = weight = 0.0
    model.eval()
    with torch.no_grad(), autocast:
        for start in range(0, len(order), batch_size):
            batch = [data[i] for i in order[start : start + batch_size]]
            batch_weight = sum(ex.weight for ex in batch)
            total += float(loss_fn(batch)) * batch_weight
            weight += batch_weight
    model.train()
    return total / weight if weight > 0 else math.nan


class LoopState(BaseModel):
    """What the training loop has done so far (saved in every checkpoint)."""

    step: int = 0  # optimiser steps done = batches taken from the stream
    losses: list[float] = []
    explanation_losses: list[float] = []  # the explanation part of each step's loss (if any)
    tokens: int = 0
    early: EarlyStopping
    early_stopped: bool = False


class _Trainer:
    """One run's model, optimiser, data and state; ``run`` trains and returns the state."""

    def __init__(
        self,
        config: TrainConfig,
        model: torch.nn.Module,
        data: tuple[list[Encoded], list[Encoded]],
        tokenizer: PreTrainedTokenizerBase,
        fingerprint: str,
        explanations: list[Encoded | None] | None = None,
    ) -> None:
        self.config, self.model, self.fingerprint = config, model, fingerprint
        self.train_data, self.val_data = data
        self.explanations = explanations or [None] * len(self.train_data)
        self.explanation_loss_fn = partial(batch_loss, model, pad_id=tokenizer.pad_token_id)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = _optimizer(config, self.params)
        self.loss_fn = _loss_fn(config, model, tokenizer)
        self.autocast = _autocast(config)
        self.state = LoopState(early=EarlyStopping(patience=config.patience))
        self.best: dict[str, torch.Tensor] | None = None
        self.resumed_from_step = self.resumed_tokens = 0

    def resume(self) -> None:
        payload = load_latest_checkpoint(self.config.checkpoint_dir, self.fingerprint)
        if payload is None:
            return
        load_trainable_state(self.model, payload["lora"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state = LoopState.model_validate(payload["state"])
        self.best = payload["best"]
        restore_rng_state(payload["rng"])
        self.resumed_from_step, self.resumed_tokens = self.state.step, self.state.tokens

    def checkpoint(self) -> None:
        payload = {
            "fingerprint": self.fingerprint,
            "lora": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": self.state.model_dump(),
            "best": self.best,
            "rng": rng_state(),
        }
        save_checkpoint(Path(self.config.checkpoint_dir), self.state.step, payload)

    def evaluate(self) -> None:
        loss = validation_loss(
            self.loss_fn, self.model, self.val_data, self.config.batch_size, self.autocast
        )
        if self.state.early.update(self.state.step, loss):
            self.best = trainable_state(self.model)
        self.state.early_stopped = self.state.early.should_stop
        logger.info("step %d validation loss %.4f", self.state.step, loss)

    def step(self, indices: list[int]) -> float:
        batch = [self.train_data[i] for i in indices]
        explained = [self.explanations[i] for i in indices if self.explanations[i] is not None]
        explained = explained[: self.config.explanation_batch_size]
        with self.autocast:
            loss = self.loss_fn(batch)
            if explained:
                explanation_loss = self.explanation_loss_fn(explained)
                loss = combined_loss(
                    [
                        (loss, sum(ex.weight for ex in batch)),
                        (explanation_loss, sum(ex.weight for ex in explained)),
                    ]
                )
                self.state.explanation_losses.append(float(explanation_loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        label_only = self.config.loss == "label"
        self.state.tokens += sum(ex.prompt_len if label_only else len(ex.ids) - 1 for ex in batch)
        self.state.tokens += sum(len(ex.ids) - 1 for ex in explained)
        self.state.step += 1
        self.state.losses.append(float(loss.detach()))
        return self.state.losses[-1]

    def run(self, on_step: Callable[[int, float], None] | None) -> LoopState:
        config, state = self.config, self.state
        batches = replay_mixed_batches(
            self.train_data, config.batch_size, config.replay_share, random.Random(config.seed)
        )
        for _ in range(state.step):  # the stream position of a resumed run
            next(batches)
        evaluating = config.eval_every > 0 and bool(self.val_data)
        if evaluating and state.step == 0:
            self.evaluate()
        self.model.train()
        while state.step < config.max_steps and not state.early_stopped:
            loss = self.step(next(batches))
            if evaluating and (
                state.step % config.eval_every == 0 or state.step == config.max_steps
            ):
                self.evaluate()
            done = state.step >= config.max_steps or state.early_stopped
            if config.checkpoint_dir and state.step % config.checkpoint_every == 0 and not done:
                self.checkpoint()
            if on_step is not None:
                on_step(state.step, loss)
        if self.best is not None:
            load_trainable_state(self.model, self.best)
        return state


def train_lora(
    config: TrainConfig,
    examples: Sequence[dict[str, Any]],
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``examples`` and save it to ``config.output_dir``.

    ``on_step(step, loss)`` is called after every optimiser step (1-based). Returns metrics:
    steps, final_loss, mean_loss, losses, train_tokens, tokens_per_s, seconds_per_step, wall_s,
    trainable_params, dtype, device, output_dir, resumed_from_step, train_examples,
    validation_examples, validation_loss ([step, loss] pairs), best_step, early_stopped.
    """
    set_threads(config.num_threads)
    start = time.perf_counter()
    _seed_everything(config.seed)
    tokenizer = load_tokenizer(config.base_model_path)
    train, val = split_validation(
        examples,
        config.validation_fraction if config.eval_every else 0.0,
        config.min_validation_examples,
    )
    data = (
        encode_examples(tokenizer, train, config.max_prompt_tokens),
        encode_examples(tokenizer, val, config.max_prompt_tokens),
    )
    explanations = encode_explanations(
        tokenizer,
        train,
        config.max_prompt_tokens,
        config.explanation_weight,
        config.max_explanation_tokens,
    )
    fingerprint = run_fingerprint(
        config.model_dump(mode="json", exclude=_NOT_FINGERPRINTED), examples
    )
    model = build_peft_model(config).to(resolve_device(config))
    trainer = _Trainer(config, model, data, tokenizer, fingerprint, explanations)
    trainer.resume()
    logger.info(
        "training %d examples (%d for validation), %s %s, %d threads, from step %d",
        len(train),
        len(val),
        resolve_device(config),
        effective_dtype(config),
        torch.get_num_threads(),
        trainer.resumed_from_step,
    )
    loop_start = time.perf_counter()
    state = trainer.run(on_step)
    loop_s = time.perf_counter() - loop_start
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    canonicalize_adapter_config(output_dir)  # same adapter, same bytes, same sha256
    # The checkpoints stay until the adapter is safely stored (the caller clears them then).
    return _metrics(config, trainer, state, loop_s, time.perf_counter() - start)


def _metrics(
    config: TrainConfig, trainer: _Trainer, state: LoopState, loop_s: float, wall_s: float
) -> dict[str, Any]:
    steps_now = max(1, state.step - trainer.resumed_from_step)
    tokens_now = state.tokens - trainer.resumed_tokens
    return {
        "steps": state.step,
        "final_loss": state.losses[-1] if state.losses else math.nan,
        "mean_loss": sum(state.losses) / len(state.losses) if state.losses else math.nan,
        "losses": state.losses,
        "train_tokens": state.tokens,
        "tokens_per_s": tokens_now / loop_s if loop_s > 0 else 0.0,
        "seconds_per_step": loop_s / steps_now,
        "wall_s": wall_s,
        "trainable_params": sum(p.numel() for p in trainer.params),
        "dtype": effective_dtype(config),
        "device": resolve_device(config),
        "output_dir": str(config.output_dir),
        "resumed_from_step": trainer.resumed_from_step,
        "train_examples": len(trainer.train_data),
        "explanation_examples": sum(ex is not None for ex in trainer.explanations),
        "explanation_steps": len(state.explanation_losses),
        "mean_explanation_loss": (
            sum(state.explanation_losses) / len(state.explanation_losses)
            if state.explanation_losses
            else math.nan
        ),
        "final_explanation_loss": (
            state.explanation_losses[-1] if state.explanation_losses else math.nan
        ),
        "validation_examples": len(trainer.val_data),
        "validation_loss": [[step, loss] for step, loss in state.early.curve],
        "best_step": state.early.best_step if state.early.best_step is not None else state.step,
        "early_stopped": state.early_stopped,
    }
