"""Severity scoring by label log-likelihood (no generation).

Each item is rendered into the severity prompt ending in the answer prefix ``{"severity": "``;
one forward pass gives the next-token distribution at the last prompt position, and each label
is scored by the log-probability of its *first* completion token. That is the label's full
likelihood up to the later tokens, which are near-deterministic once the first is chosen; it is
exact as a decision rule because the four first tokens are distinct (asserted by
``label_first_token_ids``). ``probs`` are those four probabilities renormalised to sum to 1.

Batches are built from length-sorted items (little padding), right-padded, and ``lm_head`` is
applied only to the last real position of each row (not to the whole sequence). With
``max_batch_tokens`` a batch also stops growing once its padded size (rows x longest row) would
pass that budget: on a CPU a padded token costs as much as a real one, and one huge batch is no
faster per token than several cache-sized ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from flywheel_core.ml.base_model import decoder_and_head
from flywheel_core.ml.severity_prompt import SEVERITIES, build_prompt, label_first_token_ids

DEFAULT_MAX_PROMPT_TOKENS = 320


def pad(
    rows: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded on ``side`` ("right" or "left") to the longest row."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, cols] = torch.tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest row."""
    return pad(rows, pad_id, "right")


def logits_at(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
) -> torch.Tensor:
    """Logits at positions ``(rows[k], cols[k])`` only: decoder pass, gather, then lm_head."""
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return head(hidden[rows, cols]).float()


@torch.inference_mode()
def _score_batch(
    model: PreTrainedModel, prompts: Sequence[list[int]], pad_id: int, label_ids: list[int]
) -> torch.Tensor:
    input_ids, mask = pad_right(prompts, pad_id)
    last = torch.tensor([len(p) - 1 for p in prompts])
    logits = logits_at(model, input_ids, mask, torch.arange(len(prompts)), last)
    return torch.log_softmax(logits, dim=-1)[:, label_ids]


def _result(label_logprobs: torch.Tensor) -> dict[str, Any]:
    probs = torch.softmax(label_logprobs, dim=-1)
    best = int(torch.argmax(label_logprobs))
    return {
        "severity": SEVERITIES[best],
        "scores": {s: float(v) for s, v in zip(SEVERITIES, label_logprobs, strict=True)},
        "probs": {s: float(v) for s, v in zip(SEVERITIES, probs, strict=True)},
    }


def length_batches(
    lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None
) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``batch_size`` rows and (when set)
    at most ``max_batch_tokens`` padded tokens; a single over-budget row is a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        fits = (
            current is not None
            and len(current) < batch_size
            and (max_batch_tokens is None or (len(current) + 1) * lengths[i] <= max_batch_tokens)
        )
        if fits:
            current.append(i)
        else:
            batches.append([i])
    return batches


def score_severity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[tuple[str, str]],
    *,
    batch_size: int = 8,
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    max_batch_tokens: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Rate ``(code, review)`` items; results are in input order.

    Each result: ``severity`` (always one of ``SEVERITIES``), ``scores`` (label -> log-prob of
    the label's first token) and ``probs`` (label -> probability renormalised over the four).
    """
    label_ids = label_first_token_ids(tokenizer)
    prompts = [build_prompt(tokenizer, code, review, max_prompt_tokens) for code, review in items]
    results: list[dict[str, Any] | None] = [None] * len(prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    done = 0
    for chunk in length_batches([len(p) for p in prompts], batch_size, max_batch_tokens):
        logprobs = _score_batch(model, [prompts[i] for i in chunk], pad_id, label_ids)
        for i, row in zip(chunk, logprobs, strict=True):
            results[i] = _result(row)
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, len(prompts))
    return [r for r in results if r is not None]
