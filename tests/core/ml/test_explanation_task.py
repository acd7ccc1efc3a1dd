"""Protects the explanation task: its prompt, the multi-task training format, the combined loss,
the corpus teacher's reference explanations and the student's generation."""

import os
from pathlib import Path

import pytest
import torch

from flywheel_core.domain import EvaluationRequest, GradedQuestion, Item
from flywheel_core.ml.base_model import TINY_LLAMA, load_model_and_tokenizer, resolve_base_model
from flywheel_core.ml.explaining import generate_explanations
from flywheel_core.ml.explanation_prompt import (
    build_explain_prompt,
    explanation_completion_ids,
    render_explain_messages,
)
from flywheel_core.ml.lora_training import (
    TrainConfig,
    batch_loss,
    combined_loss,
    encode_examples,
    encode_explanations,
    label_loss,
    train_lora,
)
from flywheel_core.ml.scoring import pad
from flywheel_core.ml.severity_prompt import label_first_token_ids
from flywheel_core.teacher import corpus
from flywheel_core.teaching.metrics import classification_report
from flywheel_core.teaching.reference_explanations import SOURCE, corpus_reference, describe_fix

CACHE_DIR = Path(os.environ.get("FLYWHEEL_CACHE", "~/.cache/flywheel")).expanduser()
CODE = "def load(path):\n    return eval(open(path).read())\n"
REVIEW = "eval() on file contents runs whatever the file holds."
EXPLANATION = "Critical: anyone who controls the file runs code. Fix: parse it with json.load."


@pytest.fixture(scope="module")
def tiny() -> tuple:
    return load_model_and_tokenizer(resolve_base_model(TINY_LLAMA, CACHE_DIR))


def rows(n: int = 8) -> list[dict]:
    severities = ["critical", "major", "minor", "trivial"]
    return [
        {
            "code": f"x{i} = compute({i})\n",
            "review": f"compute({i}) may return None here.",
            "severity": severities[i % 4],
            "weight": 1.0 + i % 2,
            "explanation": (
                f"{severities[i % 4].capitalize()}: the value {i} is used unchecked. Fix: check it."
                if i % 2 == 0
                else None
            ),
        }
        for i in range(n)
    ]


def test_explanation_prompt_renders_code_review_and_severity() -> None:
    system, user = (m["content"] for m in render_explain_messages(CODE, REVIEW, "critical"))
    assert "severity" in system.lower() and "fix" in system.lower()
    assert CODE.strip() in user and REVIEW in user and "Severity: critical" in user
    with pytest.raises(ValueError, match="unknown severity"):
        render_explain_messages(CODE, REVIEW, "blocker")


def test_explanation_prompt_fits_the_limit_and_ends_at_the_assistant_turn(tiny: tuple) -> None:
    _, tokenizer = tiny
    long_code = "\n".join(f"value_{i} = {i} * {i}" for i in range(400))
    ids = build_explain_prompt(tokenizer, long_code, REVIEW, "major", 192)
    assert len(ids) <= 192
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    completion = explanation_completion_ids(tokenizer, EXPLANATION, max_tokens=5)
    assert len(completion) == 6 and completion[-1] == tokenizer.eos_token_id


def test_multitask_format_pairs_an_explanation_with_each_explained_row(tiny: tuple) -> None:
    _, tokenizer = tiny
    data = rows()
    severity = encode_examples(tokenizer, data, 192)
    explained = encode_explanations(tokenizer, data, 192, weight=0.5, max_explanation_tokens=32)
    assert len(explained) == len(severity) == len(data)
    for row, sev, exp in zip(data, severity, explained, strict=True):
        assert sev.task == "severity"
        if row["explanation"] is None:
            assert exp is None
            continue
        assert exp.task == "explanation" and exp.weight == pytest.approx(0.5 * row["weight"])
        # loss only on the reference's tokens: the prompt is the explanation prompt
        prompt = build_explain_prompt(tokenizer, row["code"], row["review"], row["severity"], 192)
        assert exp.ids[: exp.prompt_len] == prompt
        assert tokenizer.decode(exp.ids[exp.prompt_len : -1]) == row["explanation"]
    assert all(e is None for e in encode_explanations(tokenizer, data, 192, 0.0, 32))


def test_combined_loss_is_the_weighted_mean_over_both_tasks(tiny: tuple) -> None:
    model, tokenizer = tiny
    data = rows(4)
    severity = encode_examples(tokenizer, data, 192)
    explained = [e for e in encode_explanations(tokenizer, data, 192, 0.5, 32) if e]
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        sev = label_loss(model, severity, pad, label_first_token_ids(tokenizer))
        exp = batch_loss(model, explained, pad)
        one_by_one = [
            label_loss(model, [s], pad, label_first_token_ids(tokenizer)) for s in severity
        ]
        one_by_one += [batch_loss(model, [e], pad) for e in explained]
    weights = [s.weight for s in severity] + [e.weight for e in explained]
    expected = sum(w * float(x) for w, x in zip(weights, one_by_one, strict=True)) / sum(weights)
    got = combined_loss(
        [(sev, sum(s.weight for s in severity)), (exp, sum(e.weight for e in explained))]
    )
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_multitask_training_reports_and_learns_explanations(tmp_path: Path) -> None:
    base = resolve_base_model(TINY_LLAMA, CACHE_DIR)
    config = TrainConfig(
        base_model_path=base,
        output_dir=tmp_path / "adapter",
        max_steps=12,
        batch_size=4,
        learning_rate=5e-3,
        max_prompt_tokens=160,
        num_threads=1,
        explanation_weight=1.0,
        explanation_batch_size=2,
        max_explanation_tokens=24,
    )
    metrics = train_lora(config, rows(8))
    assert metrics["explanation_examples"] == 4
    assert 0 < metrics["explanation_steps"] <= 12
    assert metrics["final_explanation_loss"] < metrics["mean_explanation_loss"] * 1.5
    off = train_lora(
        config.model_copy(update={"explanation_weight": 0.0, "output_dir": tmp_path / "off"}),
        rows(8),
    )
    assert off["explanation_examples"] == 0 and off["explanation_steps"] == 0


def test_generation_is_batched_left_padded_and_in_input_order(tiny: tuple) -> None:
    model, tokenizer = tiny
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    items = [(CODE, REVIEW, "critical"), ("x = 1\n", "Name is unclear.", "trivial")] * 2
    together = generate_explanations(model, tokenizer, items, batch_size=4, max_new_tokens=8)
    alone = [
        generate_explanations(model, tokenizer, [item], batch_size=1, max_new_tokens=8)[0]
        for item in items[:2]
    ]
    assert together[:2] == alone and together[2:] == alone
    assert all(isinstance(text, str) for text in together)


def test_corpus_reference_names_the_severity_the_risk_and_the_fix() -> None:
    text = corpus_reference(
        "critical",
        CODE,
        "def load(path):\n    return json.load(open(path))\n",
        "``eval`` runs arbitrary code. More text follows here.",
    )
    assert text.startswith("Critical:")
    assert "Background: eval runs arbitrary code." in text
    assert "Fix: write `return json.load(open(path))` instead of `return eval(" in text
    assert describe_fix("a = 1\npass\n", "a = 1\n") == "remove `pass`"
    assert corpus_reference("minor", CODE, None, None) is None


def test_corpus_teacher_attaches_references_and_keeps_a_reviewers_own() -> None:
    good = "def load(path):\n    return json.load(open(path))\n"
    pool = [
        Item(
            item_id=f"p{i}",
            source="pylint",
            code=CODE,
            review=REVIEW,
            severity="critical",
            good_code=good,
        )
        for i in range(3)
    ] + [
        Item(
            item_id="fb",
            source="feedback",
            code=CODE,
            review=REVIEW,
            severity="critical",
            explanation="Reviewer: this reads secrets.",
            explanation_source="reviewer",
        )
    ]
    graded = [GradedQuestion(**pool[0].model_dump(), predicted="minor")]
    report = classification_report(["critical", "minor"], ["minor", "minor"])
    result = corpus.evaluate_exam(
        EvaluationRequest(
            cycle="c1",
            graded=graded,
            report=report,
            pool=pool[1:],
            num_new_examples=4,
            min_share_per_class=0.0,
        )
    )
    sources = {e.item_id: e.explanation_source for e in result.new_examples}
    assert sources.get("fb", "reviewer") == "reviewer"
    assert any(src == SOURCE for src in sources.values())
    assert "corpus-template" in result.notes
