"""The curriculum as NeMo 2.x fine-tuning JSONL: ``training.jsonl`` + ``validation.jsonl``.

What this relies on (read in the ``nemo_toolkit`` 2.7.0 wheel, ``nemo.collections.llm``):

- ``llm.FineTuningDataModule(dataset_root=...)`` reads ``<dataset_root>/training.jsonl`` and
  ``<dataset_root>/validation.jsonl`` (``train_path`` / ``validation_path`` in
  ``gpt/data/fine_tuning.py``).
- With ``dataset_kwargs={"chat": True, "use_hf_tokenizer_chat_template": True}`` (or
  ``llm.ChatDataModule``) it builds a ``GPTSFTChatDataset`` (``gpt/data/core.py``) that takes
  the Hugging Face chat format ``{"messages": [{"role": "system"|"user"|"assistant",
  "content": ...}]}``. But its loss mask (``_chat_preprocess`` in ``gpt/data/utils.py``) is
  limited to the assistant turn only when the tokenizer's chat template has a
  ``{% generation %}`` block; Llama 3's has none, so the loss would cover the whole prompt.
- The plain format ``{"input": ..., "output": ...}`` (``GPTSFTDataset``) computes the loss on
  ``output`` only (``answer_only_loss=True``, the default).

So the conversion has two steps. On the orchestrator, ``write_nemo_dataset`` writes the
tokenizer-agnostic chat format (system + user from ``flywheel_core.ml.severity_prompt``,
assistant = ``{"severity": "<label>"}``); it is inspectable and loads as-is with
``ChatDataModule`` for a template with generation markers. Inside the NeMo environment, where
the base model's tokenizer is at hand, ``render_completion_dataset`` turns each record into
``{"input": <chat template applied to system + user, generation prompt added>, "output":
<assistant answer>}``, which the recipe trains on with ``prompt_template="{input}{output}"``:
the model's own chat template, loss on the answer tokens only (as the local PEFT recipe does).

Two tasks: a curriculum row with a reference explanation (``explanation``, written by the
teacher or a reviewer) also yields an explanation example: system + user from
``flywheel_core.ml.explanation_prompt`` (code, review and the severity), assistant = the
explanation as plain text. Rows without one, and rows of older curricula that have no
explanation column at all, teach the severity task only. Both examples of a row share its
weight and its side of the split.

Per-example weights: NeMo's SFT dataset has no per-example loss weight, so a weight is realised
by repetition: ``copies = max(1, round_half_up(weight * repeat_scale))``; a weight <= 0 drops the
example. Curriculum weights are normalised to mean 1, so the default ``repeat_scale=2`` keeps
the ratio between classes (0.5 -> 1 copy, 1 -> 2, 1.5 -> 3) where a scale of 1 would round
most weights to one copy. Validation rows are never repeated (they measure, not teach).

Split: by a content hash of (code, review), so it is deterministic, identical across runs and
machines, stable as the curriculum grows from cycle to cycle, and duplicate items never sit on
both sides.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel_core.ml.explanation_prompt import render_explain_messages
from flywheel_core.ml.severity_prompt import (
    ANSWER_PREFIX,
    ANSWER_SUFFIX,
    SEVERITIES,
    render_messages,
)

TRAINING_FILE = "training.jsonl"
VALIDATION_FILE = "validation.jsonl"
DEFAULT_REPEAT_SCALE = 2.0


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


def answer_text(severity: str) -> str:
    """The assistant turn: the JSON answer the student is trained to produce."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}")
    return ANSWER_PREFIX + severity + ANSWER_SUFFIX


def chat_record(code: str, review: str, severity: str) -> dict[str, list[dict[str, str]]]:
    """One NeMo chat example: system + user from the prompt template, assistant = answer."""
    messages = render_messages(code, review)
    messages.append({"role": "assistant", "content": answer_text(severity)})
    return {"messages": messages}


def explanation_record(
    code: str, review: str, severity: str, explanation: str
) -> dict[str, list[dict[str, str]]]:
    """One explanation-task chat example: why ``review`` on ``code`` is ``severity``."""
    messages = render_explain_messages(code, review, severity)
    messages.append({"role": "assistant", "content": explanation.strip()})
    return {"messages": messages}


def reference_explanation(example: Mapping[str, Any]) -> str | None:
    """The row's explanation if it has a non-blank one (older curricula have no such column)."""
    text = example.get("explanation")
    return text if isinstance(text, str) and text.strip() else None


def example_records(example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The severity example of a curriculum row, and its explanation example when it has one."""
    code, review, severity = example.get("code") or "", example["review"], example["severity"]
    records = [chat_record(code, review, severity)]
    explanation = reference_explanation(example)
    if explanation is not None:
        records.append(explanation_record(code, review, severity, explanation))
    return records


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
    examples: Iterable[Mapping[str, Any]], repeat_scale: float, seed: int
) -> list[dict[str, Any]]:
    """Chat records with each example repeated by its weight, shuffled with ``seed``."""
    records = []
    for e in examples:
        for record in example_records(e):
            records.extend([record] * copies(e["weight"], repeat_scale))
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
) -> NemoDatasetSummary:
    """Write the curriculum at ``examples_path`` as ``dataset_root/{training,validation}.jsonl``."""
    examples = read_curriculum(Path(examples_path))
    if not examples:
        raise ValueError(f"{examples_path}: the curriculum is empty")
    training, validation = split_examples(examples, validation_fraction)
    root = Path(dataset_root)
    root.mkdir(parents=True, exist_ok=True)
    n_train = _write_jsonl(root / TRAINING_FILE, training_records(training, repeat_scale, seed))
    if n_train == 0:
        raise ValueError(f"{examples_path}: no training rows left (all weights <= 0?)")
    val_records = (record for e in validation for record in example_records(e))
    n_val = _write_jsonl(root / VALIDATION_FILE, val_records)
    return NemoDatasetSummary(
        dataset_root=str(root),
        training_rows=n_train,
        validation_rows=n_val,
        source_examples=len(examples),
        dropped_examples=sum(1 for e in training if copies(e["weight"], repeat_scale) == 0),
        explanation_examples=sum(1 for e in examples if reference_explanation(e) is not None),
    )


def completion_record(
    record: Mapping[str, Any], apply_template: Callable[[list[dict[str, str]]], str]
) -> dict[str, str]:
    """A chat record as ``{"input": templated prompt, "output": assistant answer}``."""
    messages = list(record["messages"])
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a training record must end with the assistant's answer")
    return {"input": apply_template(messages[:-1]), "output": messages[-1]["content"]}


def render_completion_dataset(
    chat_root: Path, out_root: Path, apply_template: Callable[[list[dict[str, str]]], str]
) -> dict[str, int]:
    """Both split files of ``chat_root`` rendered into ``out_root``; rows written per file."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in (TRAINING_FILE, VALIDATION_FILE):
        with (Path(chat_root) / name).open(encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        rendered = (completion_record(r, apply_template) for r in records)
        counts[name] = _write_jsonl(out_root / name, rendered)
    return counts
