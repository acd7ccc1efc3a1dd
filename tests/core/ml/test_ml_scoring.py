"""Protects the severity prompt (render, truncation, label tokens) and label-likelihood scoring."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from flywheel_core.ml.base_model import (
    SMOLLM2,
    TINY_LLAMA,
    load_model_and_tokenizer,
    resolve_base_model,
)
from flywheel_core.ml.scoring import score_severity
from flywheel_core.ml.severity_prompt import (
    SEVERITIES,
    build_prompt,
    completion_ids,
    label_first_token_ids,
    load_template,
    render_messages,
)

torch.set_num_threads(1)

CACHE_DIR = Path(os.environ.get("FLYWHEEL_CACHE", "~/.cache/flywheel")).expanduser()
ITEMS = [
    ("def f(d):\n    return d['key']", "This raises KeyError when the key is missing."),
    ("x = 1  # set x", "Nit: the comment is redundant."),
    ("for i in range(len(xs)):\n    total += xs[i + 1]", "Off by one: reads past the end."),
]


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object]:
    return load_model_and_tokenizer(resolve_base_model(TINY_LLAMA, CACHE_DIR))


@pytest.fixture(scope="module")
def tokenizer(tiny: tuple[torch.nn.Module, object]) -> object:
    return tiny[1]


def test_template_has_system_and_user_sections() -> None:
    system, user = load_template()
    assert "{code}" in user and "{review}" in user
    for severity in SEVERITIES:
        assert f"{severity}:" in system


def test_render_messages_fills_code_review_and_definitions() -> None:
    code = "def f():\n    return {'a': 1}"
    messages = render_messages(code, "use a constant")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert code in messages[1]["content"] and "use a constant" in messages[1]["content"]
    assert '{"severity": ' in messages[1]["content"]  # doubled braces came out single
    system = messages[0]["content"]
    for words in ("security", "crash", "incorrect results", "does not disrupt", "docstrings"):
        assert words in system


def test_prompt_ends_with_answer_prefix(tokenizer: object) -> None:
    ids = build_prompt(tokenizer, *ITEMS[0], max_prompt_tokens=512)
    text = tokenizer.decode(ids)
    assert text.endswith('<|im_start|>assistant\n{"severity": "')
    assert "KeyError" in text


@pytest.mark.parametrize("limit", [150, 200, 256])
def test_truncation_keeps_prompt_under_limit(tokenizer: object, limit: int) -> None:
    code = "\n".join(f"line_{i} = compute({i})" for i in range(400))
    ids = build_prompt(tokenizer, code, "Rename these variables.", max_prompt_tokens=limit)
    assert len(ids) <= limit
    text = tokenizer.decode(ids)
    assert "line_0 " in text and "compute(399)" in text and "\n...\n" in text
    assert "Rename these variables." in text


def test_truncation_falls_back_to_review(tokenizer: object) -> None:
    review = " ".join(["word"] * 500) + " END"
    ids = build_prompt(tokenizer, "x = 1", review, max_prompt_tokens=160)
    assert len(ids) <= 160
    assert tokenizer.decode(ids).endswith('{"severity": "')


def test_completion_continues_prompt_tokenisation(tokenizer: object) -> None:
    prompt = build_prompt(tokenizer, *ITEMS[1], max_prompt_tokens=512)
    for severity in SEVERITIES:
        completion = completion_ids(tokenizer, severity)
        assert completion[-1] == tokenizer.eos_token_id
        whole = tokenizer.decode(prompt) + severity + '"}'
        assert prompt + completion[:-1] == tokenizer.encode(whole, add_special_tokens=False)


def test_label_first_tokens_are_distinct(tokenizer: object) -> None:
    assert len(set(label_first_token_ids(tokenizer))) == len(SEVERITIES)


def test_scoring_returns_a_label_and_normalised_probs(tiny: tuple) -> None:
    model, tokenizer = tiny
    progress: list[tuple[int, int]] = []
    results = score_severity(
        model, tokenizer, ITEMS, batch_size=2, on_progress=lambda d, t: progress.append((d, t))
    )
    assert len(results) == len(ITEMS)
    for result in results:
        assert result["severity"] in SEVERITIES
        assert sum(result["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert max(result["scores"], key=result["scores"].get) == result["severity"]
        assert all(v <= 0.0 for v in result["scores"].values())
    assert progress[-1] == (len(ITEMS), len(ITEMS))


def test_batched_scoring_matches_one_by_one(tiny: tuple) -> None:
    model, tokenizer = tiny
    batched = score_severity(model, tokenizer, ITEMS, batch_size=8)
    single = [score_severity(model, tokenizer, [item], batch_size=1)[0] for item in ITEMS]
    for b, s in zip(batched, single, strict=True):
        for severity in SEVERITIES:
            assert b["scores"][severity] == pytest.approx(s["scores"][severity], abs=1e-4)


@pytest.mark.slow
def test_real_smollm2_scores_two_items() -> None:
    model, tokenizer = load_model_and_tokenizer(resolve_base_model(SMOLLM2, CACHE_DIR))
    results = score_severity(model, tokenizer, ITEMS[:2], max_prompt_tokens=256)
    assert [r["severity"] in SEVERITIES for r in results] == [True, True]
    for result in results:
        assert sum(result["probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_length_batches_respect_rows_and_padded_token_budget() -> None:
    from flywheel_core.ml.scoring import length_batches

    lengths = [100, 10, 300, 50, 60, 900]
    assert length_batches(lengths, batch_size=16) == [[1, 3, 4, 0, 2, 5]]
    batches = length_batches(lengths, batch_size=16, max_batch_tokens=250)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 250
    assert [5] in batches and [2] in batches  # over budget alone: a batch of its own
    assert length_batches(lengths, batch_size=2) == [[1, 3], [4, 0], [2, 5]]
