"""The curriculum as the NeMo AutoModel recipe's dataset: ``training.jsonl`` + ``validation.jsonl``.

Two steps, so the orchestrator needs no tokenizer and the recipe tokenizes exactly like the
PEFT recipe:

1. On the orchestrator, ``write_nemo_dataset`` writes task rows beside the curriculum:
   ``{"task": "severity" | "explanation", "code", "review", "severity", "explanation"}``.
2. Inside the recipe (the NeMo venv), the YAML's ``dataset._target_`` is
   ``flywheel_core.ml.nemo_data.sft_dataset``: nemo_automodel's dataloader builds it with the
   student's tokenizer and gets ``{"input_ids", "labels", "attention_mask"}`` items, the labels
   ``-100`` on the prompt (answer-only loss). The prompt and the completion are the PEFT
   recipe's own (``severity_prompt.build_prompt`` + ``completion_ids``: the chat-templated
   prompt + ``{"severity": "`` then ``<label>"}`` + eos; ``explanation_prompt`` for the second
   task, the reference cut to ``max_explanation_tokens`` + eos), truncated the same way, so the
   adapter is scored on exactly the prompt it was trained on.

Two tasks: a curriculum row with a reference explanation (``explanation``, written by the
teacher or a reviewer) also yields an explanation row. Rows without one, and rows of older
curricula that have no explanation column at all, teach the severity task only. Both rows of
a curriculum row share its side of the split.

Per-example weights: the recipe's loss has no per-example weight (its ``loss_weights`` contract
is reserved for Megatron domain mixtures), so a weight is realised by repetition:
``copies = max(1, round_half_up(weight * repeat_scale))``; a weight <= 0 drops the example. An
explanation row is weighted ``explanation_weight`` x the row's weight, as in the PEFT recipe
(``explanation_weight = 0`` writes none). Curriculum weights are normalised to mean 1, so the
default ``repeat_scale=2`` keeps the ratio between classes (0.5 -> 1 copy, 1 -> 2, 1.5 -> 3)
where a scale of 1 would round most weights to one copy. Validation rows are never repeated
(they measure, not teach).

Split: by a content hash of (code, review), so it is deterministic, identical across runs and
machines, stable as the curriculum grows from cycle to cycle, and duplicate items never sit on
both sides.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel_core.ml.explanation_prompt import (
    DEFAULT_MAX_EXPLANATION_TOKENS,
    build_explain_prompt,
    explanation_completion_ids,
)
from flywheel_core.ml.severity_prompt import SEVERITIES, build_prompt, completion_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TRAINING_FILE = "training.jsonl"
VALIDATION_FILE = "validation.jsonl"
DEFAULT_REPEAT_SCALE = 2.0
TASKS = ("severity", "explanation")
IGNORE_INDEX = -100  # label of a position that carries no loss (the prompt, the padding)


@dataclass(frozen=True)
class NemoDatasetSummary:
    dataset_root: str
    training_rows: int  # after repetition
    validation_rows: int
    source_examples: int
    dropped_examples: int  # weight <= 0
    explanation_examples: int = 0  # source examples with a reference explanation

    def as_metadata(self) -> dict[str, Any]:
        return {
            "nemo_dataset_root": self.dataset_root,
            "nemo_training_rows": self.training_rows,
            "nemo_validation_rows": self.validation_rows,
            "nemo_source_examples": self.source_examples,
            "nemo_dropped_examples": self.dropped_examples,
            "nemo_explanation_examples": self.explanation_examples,
        }


def task_row(
    task: str, code: str, review: str, severity: str, explanation: str | None = None
) -> dict[str, Any]:
    """One row of the recipe's dataset (what ``sft_dataset`` tokenizes)."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    row = {"task": task, "code": code, "review": review, "severity": severity}
    if task == "explanation":
        if not (explanation or "").strip():
            raise ValueError("an explanation row needs a non-empty explanation")
        row["explanation"] = explanation.strip()
    return row


def reference_explanation(example: Mapping[str, Any]) -> str | None:
    """The row's explanation if it has a non-blank one (older curricula have no such column)."""
    text = example.get("explanation")
    return text if isinstance(text, str) and text.strip() else None


def example_rows(
    example: Mapping[str, Any], explanation_weight: float = 0.5
) -> list[tuple[dict[str, Any], float]]:
    """(row, relative weight) of a curriculum row's severity example and, when it has a
    reference explanation and ``explanation_weight > 0``, of its explanation example."""
    code, review, severity = example.get("code") or "", example["review"], example["severity"]
    rows = [(task_row("severity", code, review, severity), 1.0)]
    explanation = reference_explanation(example)
    if explanation is not None and explanation_weight > 0:
        rows.append(
            (task_row("explanation", code, review, severity, explanation), explanation_weight)
        )
    return rows


def copies(weight: float, repeat_scale: float = DEFAULT_REPEAT_SCALE) -> int:
    """Integer repetitions standing in for a per-example loss weight (see module docstring)."""
    if weight is None or weight <= 0 or math.isnan(weight):
        return 0
    return max(1, math.floor(weight * repeat_scale + 0.5))


def split_key(code: str, review: str) -> float:
    """A number in [0, 1) from the content: which side of the split an example falls on."""
    digest = hashlib.sha256(f"{code}\x00{review}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_examples(
    examples: Sequence[Mapping[str, Any]], validation_fraction: float
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(training, validation) by content hash; with two+ examples neither side is empty."""
    keyed = sorted(
        ((split_key(e.get("code") or "", e["review"]), i, e) for i, e in enumerate(examples)),
        key=lambda t: (t[0], t[1]),
    )
    validation = [e for k, _, e in keyed if k < validation_fraction]
    training = [e for k, _, e in keyed if k >= validation_fraction]
    if validation_fraction > 0 and not validation and len(training) > 1:
        validation, training = training[:1], training[1:]
    if not training and len(validation) > 1:
        validation, training = validation[:-1], validation[-1:]
    return training, validation


def read_curriculum(path: Path) -> list[dict[str, Any]]:
    """Curriculum JSONL rows (code, review, severity, weight, optional explanation); missing
    weight = 1."""
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                weight = row.get("weight")
                row["weight"] = 1.0 if weight is None else float(weight)
                rows.append(row)
    return rows


def training_records(
    examples: Iterable[Mapping[str, Any]],
    repeat_scale: float,
    seed: int,
    explanation_weight: float = 0.5,
) -> list[dict[str, Any]]:
    """Task rows with each repeated by its weight, shuffled with ``seed``."""
    records = []
    for e in examples:
        for row, relative in example_rows(e, explanation_weight):
            records.extend([row] * copies(e["weight"] * relative, repeat_scale))
    random.Random(seed).shuffle(records)
    return records


def _write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_nemo_dataset(
    examples_path: Path,
    dataset_root: Path,
    validation_fraction: float = 0.1,
    repeat_scale: float = DEFAULT_REPEAT_SCALE,
    seed: int = 0,
    explanation_weight: float = 0.5,
) -> NemoDatasetSummary:
    """Write the curriculum at ``examples_path`` as ``dataset_root/{training,validation}.jsonl``."""
    examples = read_curriculum(Path(examples_path))
    if not examples:
        raise ValueError(f"{examples_path}: the curriculum is empty")
    training, validation = split_examples(examples, validation_fraction)
    root = Path(dataset_root)
    root.mkdir(parents=True, exist_ok=True)
    records = training_records(training, repeat_scale, seed, explanation_weight)
    n_train = _write_jsonl(root / TRAINING_FILE, records)
    if n_train == 0:
        raise ValueError(f"{examples_path}: no training rows left (all weights <= 0?)")
    val_rows = (row for e in validation for row, _ in example_rows(e, explanation_weight))
    n_val = _write_jsonl(root / VALIDATION_FILE, val_rows)
    return NemoDatasetSummary(
        dataset_root=str(root),
        training_rows=n_train,
        validation_rows=n_val,
        source_examples=len(examples),
        dropped_examples=sum(1 for e in training if copies(e["weight"], repeat_scale) == 0),
        explanation_examples=sum(1 for e in examples if reference_explanation(e) is not None),
    )


def tokenize_row(
    tokenizer: PreTrainedTokenizerBase,
    row: Mapping[str, Any],
    max_prompt_tokens: int,
    max_explanation_tokens: int = DEFAULT_MAX_EXPLANATION_TOKENS,
) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of a task row, exactly as the PEFT recipe encodes it."""
    code, review, severity = row.get("code") or "", row["review"], row["severity"]
    if row.get("task", "severity") == "explanation":
        prompt = build_explain_prompt(tokenizer, code, review, severity, max_prompt_tokens)
        text = row["explanation"]
        completion = explanation_completion_ids(tokenizer, text, max_explanation_tokens)
    else:
        prompt = build_prompt(tokenizer, code, review, max_prompt_tokens)
        completion = completion_ids(tokenizer, severity)
    return prompt, completion


def sft_item(
    prompt: list[int], completion: list[int], pad_token_id: int, label_only: bool = False
) -> dict[str, Any]:
    """A next-token-prediction item in nemo_automodel's layout: inputs are the sequence minus
    its last token, labels the sequence shifted by one with the prompt masked (answer-only
    loss); ``___PAD_TOKEN_IDS___`` tells ``default_collater`` how to pad each field. With
    ``label_only`` only the completion's first token (the label's, which decides how the
    student is scored) carries loss."""
    ids = prompt + completion
    target = completion[:1] + [IGNORE_INDEX] * (len(completion) - 1) if label_only else completion
    labels = [IGNORE_INDEX] * len(prompt) + target
    return {
        "input_ids": ids[:-1],
        "labels": labels[1:],
        "attention_mask": [1] * (len(ids) - 1),
        "___PAD_TOKEN_IDS___": {
            "input_ids": pad_token_id,
            "labels": IGNORE_INDEX,
            "attention_mask": 0,
        },
    }


class SftDataset:
    """Map-style dataset of tokenized task rows (the recipe's ``dataset``); a fresh dict per
    access, since the collater pops ``___PAD_TOKEN_IDS___`` from the first item in place."""

    def __init__(self, items: list[tuple[list[int], list[int], bool]], pad_token_id: int) -> None:
        self.items = items  # (prompt, completion, label only)
        self.pad_token_id = pad_token_id

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        prompt, completion, label_only = self.items[index]
        return sft_item(prompt, completion, self.pad_token_id, label_only)


def sft_dataset(
    path_or_dataset_id: str,
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_tokens: int = 256,
    max_explanation_tokens: int = DEFAULT_MAX_EXPLANATION_TOKENS,
    loss: str = "completion",
) -> SftDataset:
    """The recipe's dataset factory (``dataset._target_`` in the generated YAML): the task rows
    of one split file, tokenized with the tokenizer nemo_automodel passes in. ``loss`` is the
    `training.loss` setting: ``"label"`` puts the severity rows' loss on the label's first token
    only (the PEFT recipe's label loss, here over the whole vocabulary), ``"completion"`` on
    every answer token; explanation rows always train on the whole explanation."""
    if loss not in ("label", "completion"):
        raise ValueError(f"loss={loss!r}; expected 'label' or 'completion'")
    with Path(path_or_dataset_id).open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    if not rows:
        raise ValueError(f"{path_or_dataset_id}: no rows")
    items = []
    for row in rows:
        prompt, completion = tokenize_row(tokenizer, row, max_prompt_tokens, max_explanation_tokens)
        label_only = loss == "label" and row.get("task", "severity") == "severity"
        items.append((prompt, completion, label_only))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return SftDataset(items, pad)
