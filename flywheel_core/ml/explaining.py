"""The student writes explanations: greedy decoding of the explanation prompt, batched.

Prompts are left-padded so every row's next token sits in the last column; a row stops at eos
(or after ``max_new_tokens``). A mild repetition penalty keeps a small model from looping; it
counts only the generated tokens, never the prompt's (transformers' default counts the prompt
too, which would push the model away from naming the severity or quoting the code it was given:
exactly what an explanation should do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import (
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
)

from flywheel_core.ml.explanation_prompt import (
    DEFAULT_MAX_EXPLANATION_TOKENS,
    REPETITION_PENALTY,
    build_explain_prompt,
)
from flywheel_core.ml.scoring import pad

DEFAULT_MAX_PROMPT_TOKENS = 320


@torch.inference_mode()
def _generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
) -> list[str]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids, mask = pad(prompts, pad_id, "left")
    device = next(model.parameters()).device
    penalty = RepetitionPenaltyLogitsProcessor(
        REPETITION_PENALTY, prompt_ignore_length=input_ids.shape[1]
    )
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        logits_processor=LogitsProcessorList([penalty]),
        pad_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    new_tokens = output[:, input_ids.shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


def generate_explanations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[tuple[str, str, str]],
    *,
    batch_size: int = 8,
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    max_new_tokens: int = DEFAULT_MAX_EXPLANATION_TOKENS,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Explain ``(code, review, severity)`` items; results in input order."""
    prompts = [
        build_explain_prompt(tokenizer, code, review, severity, max_prompt_tokens)
        for code, review, severity in items
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        texts = _generate_batch(model, tokenizer, [prompts[i] for i in chunk], max_new_tokens)
        for i, text in zip(chunk, texts, strict=True):
            results[i] = text
        if on_progress is not None:
            on_progress(min(start + batch_size, len(order)), len(order))
    return results
