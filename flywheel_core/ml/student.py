"""The student at work: a base model (+ LoRA adapter) that rates and explains findings.

torch and transformers are imported only when a model is loaded, so code that merely names the
student (the Dagster definitions, the CLI) starts fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel_core.ml.base_model import base_model_id, resolve_base_model
from flywheel_core.ml.hardware import cpu_has_native_bf16
from flywheel_core.settings import StudentSettings

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Student:
    """The student of `settings` (base model, batch size, prompt length, threads, dtype)."""

    settings: StudentSettings
    cache_dir: Path

    @property
    def max_prompt_tokens(self) -> int:
        return self.settings.max_prompt_tokens

    @property
    def num_threads(self) -> int:
        return self.settings.num_threads

    def base_model_path(self) -> Path:
        return resolve_base_model(self.settings.base_model, Path(self.cache_dir))

    def base_model_id(self) -> str:
        return base_model_id(self.settings.base_model)

    def dtype_name(self) -> str:
        """ "bfloat16" or "float32" ("auto": bf16 where the CPU computes it natively)."""
        if self.settings.dtype == "auto":
            return "bfloat16" if cpu_has_native_bf16() else "float32"
        return self.settings.dtype

    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name())

    def _load(self, adapter_dir: Path | None) -> tuple:
        import torch

        from flywheel_core.ml.base_model import load_model_and_tokenizer

        torch.set_num_threads(self.settings.num_threads)
        return load_model_and_tokenizer(
            self.base_model_path(), adapter_dir=adapter_dir, dtype=self.torch_dtype()
        )

    def rate(
        self,
        items: Sequence[tuple[str, str]],
        adapter_dir: Path | None = None,
        on_progress: Progress | None = None,
    ) -> tuple[list[dict], float]:
        """Severity and per-label probabilities for (code, review) pairs, and seconds taken."""
        from flywheel_core.ml.scoring import score_severity

        model, tokenizer = self._load(adapter_dir)
        start = time.perf_counter()
        results = score_severity(
            model,
            tokenizer,
            list(items),
            batch_size=self.settings.batch_size,
            max_prompt_tokens=self.settings.max_prompt_tokens,
            on_progress=on_progress,
        )
        return results, time.perf_counter() - start

    def explain(
        self,
        items: Sequence[tuple[str, str, str]],
        adapter_dir: Path | None = None,
        max_new_tokens: int = 96,
        on_progress: Progress | None = None,
    ) -> tuple[list[str], float]:
        """Explanations for (code, review, severity) items, and seconds taken."""
        from flywheel_core.ml.explaining import generate_explanations

        model, tokenizer = self._load(adapter_dir)
        start = time.perf_counter()
        texts = generate_explanations(
            model,
            tokenizer,
            list(items),
            batch_size=self.settings.batch_size,
            max_prompt_tokens=self.settings.max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            on_progress=on_progress,
        )
        return texts, time.perf_counter() - start
