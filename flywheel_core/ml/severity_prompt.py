"""The severity-rating prompt: rendering, tokenisation, truncation and label completions.

Template format (``prompts/severity_rating.md``): ``str.format`` substitution with the two
placeholders ``{code}`` and ``{review}``; literal braces are written ``{{`` / ``}}``. Substituted
values are not re-parsed, so code full of braces is safe. An optional HTML comment header comes
first; a line ``### system`` starts the system message and a line ``### user`` the user message.

A prompt is the chat-templated conversation (``add_generation_prompt=True``) followed by the
answer prefix ``{"severity": "``; the completion for a label is ``<label>"}`` plus eos. The
completion is tokenised as the continuation of the answer prefix (``"}`` merges into a single
token with SmolLM2), so ``prompt + completion`` equals tokenising the whole text at once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SEVERITIES: tuple[str, ...] = ("critical", "major", "minor", "trivial")
PROMPT_PATH = Path(__file__).resolve().parents[2] / "prompts" / "severity_rating.md"
ANSWER_PREFIX = '{"severity": "'
ANSWER_SUFFIX = '"}'
ELLIPSIS = "\n...\n"
SYSTEM_MARKER = "### system"
USER_MARKER = "### user"
# Room kept below max_prompt_tokens while truncating: decode/re-encode may shift a few tokens.
_TRUNCATION_SLACK = 4


@functools.cache
def load_template(
    path: Path = PROMPT_PATH, placeholders: tuple[str, ...] = ("code", "review")
) -> tuple[str, str]:
    """(system, user) template strings parsed from a prompt file; the user section must hold
    every one of ``placeholders``."""
    text = Path(path).read_text(encoding="utf-8")
    match = re.search(
        rf"^{re.escape(SYSTEM_MARKER)}\s*\n(.*?)^{re.escape(USER_MARKER)}\s*\n(.*)\Z",
        text,
        flags=re.DOTALL | re.MULTILINE,
    )
    if match is None:
        raise ValueError(f"{path}: expected '{SYSTEM_MARKER}' and '{USER_MARKER}' sections")
    system, user = match.group(1).strip(), match.group(2).strip()
    missing = [name for name in placeholders if "{" + name + "}" not in user]
    if missing:
        raise ValueError(f"{path}: the user section needs the placeholders {missing}")
    return system, user


def render_messages(code: str, review: str) -> list[dict[str, str]]:
    """Chat messages (system + user) asking for the severity of ``review`` on ``code``."""
    system, user = load_template()
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user.format(code=code, review=review)},
    ]


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, code: str, review: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        render_messages(code, review), add_generation_prompt=True, tokenize=False
    )
    return encode(tokenizer, text + ANSWER_PREFIX)


def head_tail(tokenizer: PreTrainedTokenizerBase, text: str, keep_tokens: int) -> str:
    """``text`` cut to about ``keep_tokens`` tokens: its head and tail joined by ``...``."""
    ids = encode(tokenizer, text)
    if len(ids) <= keep_tokens:
        return text
    if keep_tokens <= 0:
        return ELLIPSIS.strip()
    head = (keep_tokens + 1) // 2
    tail = keep_tokens - head
    tail_text = tokenizer.decode(ids[len(ids) - tail :]) if tail else ""
    return tokenizer.decode(ids[:head]) + ELLIPSIS + tail_text


def fit_prompt(
    tokenizer: PreTrainedTokenizerBase,
    render: Callable[[str, str], list[int]],
    code: str,
    review: str,
    max_prompt_tokens: int,
) -> list[int]:
    """``render(code, review)`` token ids, at most ``max_prompt_tokens`` long.

    Over-long code is cut in the middle (head and tail kept, joined by ``...``); if the review
    alone still does not fit, the review is cut the same way.
    """
    ids = render(code, review)
    for field in ("code", "review"):
        for _ in range(4):
            if len(ids) <= max_prompt_tokens:
                return ids
            overflow = len(ids) - max_prompt_tokens + _TRUNCATION_SLACK
            if field == "code":
                code = head_tail(tokenizer, code, len(encode(tokenizer, code)) - overflow)
            else:
                review = head_tail(tokenizer, review, len(encode(tokenizer, review)) - overflow)
            ids = render(code, review)
    if len(ids) > max_prompt_tokens:
        raise ValueError(
            f"the empty prompt needs {len(ids)} tokens, over max_prompt_tokens={max_prompt_tokens}"
        )
    return ids


def build_prompt(
    tokenizer: PreTrainedTokenizerBase, code: str, review: str, max_prompt_tokens: int
) -> list[int]:
    """Token ids of the chat prompt + answer prefix, at most ``max_prompt_tokens`` long."""
    return fit_prompt(
        tokenizer, lambda c, r: _prompt_ids(tokenizer, c, r), code, review, max_prompt_tokens
    )


def completion_ids(tokenizer: PreTrainedTokenizerBase, severity: str) -> list[int]:
    """Token ids of the completion ``<severity>"}`` + eos that follows the answer prefix."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}")
    prefix = encode(tokenizer, ANSWER_PREFIX)
    full = encode(tokenizer, ANSWER_PREFIX + severity + ANSWER_SUFFIX)
    if full[: len(prefix)] != prefix:
        raise ValueError(f"tokenizer merges the answer prefix with {severity!r}")
    return full[len(prefix) :] + [tokenizer.eos_token_id]


def label_first_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """First completion token of each label, in ``SEVERITIES`` order; asserted distinct.

    Scoring compares only these tokens: with distinct first tokens, the first token decides the
    label (SmolLM2: critical, major, minor are one token each, trivial is ``tr`` + ``ivial``).
    """
    first = [completion_ids(tokenizer, severity)[0] for severity in SEVERITIES]
    if len(set(first)) != len(first):
        shared = dict(zip(SEVERITIES, first, strict=True))
        raise AssertionError(f"severity labels share first tokens: {shared}")
    return first
