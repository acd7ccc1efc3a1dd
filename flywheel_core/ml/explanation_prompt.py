"""The explanation prompt (second task): why a finding has its severity, in a few sentences.

Template: ``prompts/explain_severity.md``, same file format as the severity prompt
(``severity_prompt.py``) with a third placeholder ``{severity}``. A prompt is the
chat-templated conversation with ``add_generation_prompt=True``; the completion is the
explanation's tokens plus eos (``<|im_end|>`` for SmolLM2, the end of the assistant turn).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from flywheel_core.ml.severity_prompt import SEVERITIES, encode, fit_prompt, load_template

EXPLAIN_PROMPT_PATH = Path(__file__).resolve().parents[2] / "prompts" / "explain_severity.md"
PLACEHOLDERS = ("code", "review", "severity")
DEFAULT_MAX_EXPLANATION_TOKENS = 96
REPETITION_PENALTY = 1.15
# How explanations are decoded; part of the cache key of stored explanations.
DECODING = f"greedy, repetition penalty {REPETITION_PENALTY} on generated tokens only"


def render_explain_messages(code: str, review: str, severity: str) -> list[dict[str, str]]:
    """Chat messages (system + user) asking why ``review`` on ``code`` is ``severity``."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}")
    system, user = load_template(EXPLAIN_PROMPT_PATH, PLACEHOLDERS)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user.format(code=code, review=review, severity=severity)},
    ]


def build_explain_prompt(
    tokenizer: PreTrainedTokenizerBase,
    code: str,
    review: str,
    severity: str,
    max_prompt_tokens: int,
) -> list[int]:
    """Token ids of the explanation prompt, at most ``max_prompt_tokens`` (code cut first)."""

    def render(c: str, r: str) -> list[int]:
        text = tokenizer.apply_chat_template(
            render_explain_messages(c, r, severity), add_generation_prompt=True, tokenize=False
        )
        return encode(tokenizer, text)

    return fit_prompt(tokenizer, render, code, review, max_prompt_tokens)


def explanation_completion_ids(
    tokenizer: PreTrainedTokenizerBase,
    explanation: str,
    max_tokens: int = DEFAULT_MAX_EXPLANATION_TOKENS,
) -> list[int]:
    """The reference explanation's tokens (cut to ``max_tokens``) followed by eos."""
    ids = encode(tokenizer, explanation.strip())
    if not ids:
        raise ValueError("an explanation example needs a non-empty explanation")
    return ids[:max_tokens] + [tokenizer.eos_token_id]
