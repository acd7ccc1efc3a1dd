"""The student: a causal LM (+ LoRA adapter) that rates severities by label log-likelihood."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
import torch

from flywheel_assets.ml.base_model import (
    base_model_id,
    load_model_and_tokenizer,
    resolve_base_model,
)
from flywheel_assets.ml.explaining import generate_explanations
from flywheel_assets.ml.lora_training import cpu_has_native_bf16
from flywheel_assets.ml.scoring import score_severity


class StudentModel(dg.ConfigurableResource):
    """Runs the student in-process (CPU). `base_model`: smollm2-135m-instruct | tiny-llama."""

    base_model: str = "smollm2-135m-instruct"
    cache_dir: str
    batch_size: int = 8
    max_prompt_tokens: int = 256
    num_threads: int = 2
    dtype: str = "auto"  # "auto": bf16 where the CPU computes it natively, else fp32

    def base_model_path(self) -> Path:
        return resolve_base_model(self.base_model, Path(self.cache_dir))

    def base_model_id(self) -> str:
        return base_model_id(self.base_model)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
        return getattr(torch, self.dtype)

    def _load(self, adapter_dir: Path | None) -> tuple:
        torch.set_num_threads(self.num_threads)
        return load_model_and_tokenizer(
            self.base_model_path(), adapter_dir=adapter_dir, dtype=self.torch_dtype()
        )

    def explain(
        self,
        items: Sequence[tuple[str, str, str]],
        adapter_dir: Path | None = None,
        max_new_tokens: int = 96,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[str], float]:
        """Explanations for (code, review, severity) items, and seconds taken."""
        model, tokenizer = self._load(adapter_dir)
        start = time.perf_counter()
        texts = generate_explanations(
            model,
            tokenizer,
            list(items),
            batch_size=self.batch_size,
            max_prompt_tokens=self.max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            on_progress=on_progress,
        )
        return texts, time.perf_counter() - start

    def rate(
        self,
        items: Sequence[tuple[str, str]],
        adapter_dir: Path | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[dict], float]:
        """Severity and per-label probabilities for (code, review) pairs, and seconds taken."""
        model, tokenizer = self._load(adapter_dir)
        start = time.perf_counter()
        results = score_severity(
            model,
            tokenizer,
            list(items),
            batch_size=self.batch_size,
            max_prompt_tokens=self.max_prompt_tokens,
            on_progress=on_progress,
        )
        return results, time.perf_counter() - start
