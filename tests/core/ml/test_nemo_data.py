"""Protects the curriculum -> NeMo AutoModel dataset conversion: task rows, weights as
repetitions, split, the explanation rows of rows that have a reference explanation, and the
recipe's tokenized items (the PEFT recipe's prompt and completion, loss on the answer only)."""

from __future__ import annotations

import json

import pytest

from flywheel_core.ml import nemo_data
from flywheel_core.ml.explanation_prompt import build_explain_prompt, explanation_completion_ids
from flywheel_core.ml.severity_prompt import build_prompt, completion_ids


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(n, weight=1.0):
    labels = ("critical", "major", "minor", "trivial")
    return [
        {"code": f"x = {i}", "review": f"review {i}", "severity": labels[i % 4], "weight": weight}
        for i in range(n)
    ]


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_severity_row_carries_the_item_and_its_label():
    row = nemo_data.task_row("severity", "import os", "os is unused", "trivial")
    assert row == {
        "task": "severity",
        "code": "import os",
        "review": "os is unused",
        "severity": "trivial",
    }


def test_an_unknown_label_or_task_or_an_empty_explanation_is_refused():
    with pytest.raises(ValueError, match="unknown severity"):
        nemo_data.task_row("severity", "", "r", "blocker")
    with pytest.raises(ValueError, match="unknown task"):
        nemo_data.task_row("summary", "", "r", "minor")
    with pytest.raises(ValueError, match="non-empty explanation"):
        nemo_data.task_row("explanation", "", "r", "minor", " ")


@pytest.mark.parametrize(
    ("weight", "scale", "expected"),
    [
        (0.0, 2, 0),
        (-1, 2, 0),
        (0.1, 2, 1),
        (0.5, 2, 1),
        (0.75, 2, 2),
        (1.0, 2, 2),
        (1.5, 2, 3),
        (1.0, 1, 1),
        (1.4, 1, 1),
        (2.5, 1, 3),
    ],
)
def test_weights_become_integer_copies(weight, scale, expected):
    assert nemo_data.copies(weight, scale) == expected


def test_training_rows_repeat_by_weight_and_validation_rows_do_not(tmp_path):
    rows = _rows(40, weight=1.5)
    rows[0]["weight"] = 0.0
    src = _write(tmp_path / "curriculum.jsonl", rows)
    summary = nemo_data.write_nemo_dataset(src, tmp_path / "nemo", 0.25, repeat_scale=2, seed=3)
    training = _read(tmp_path / "nemo" / "training.jsonl")
    validation = _read(tmp_path / "nemo" / "validation.jsonl")
    train_src, val_src = nemo_data.split_examples(nemo_data.read_curriculum(src), 0.25)
    kept = [r for r in train_src if r["weight"] > 0]
    assert len(training) == 3 * len(kept) == summary.training_rows
    assert len(validation) == len(val_src) == summary.validation_rows
    assert summary.source_examples == 40
    assert summary.dropped_examples == (1 if rows[0] in train_src else 0)
    reviews = [r["review"] for r in training]
    assert all(reviews.count(u) == 3 for u in reviews)


def test_the_split_is_deterministic_disjoint_and_stable_as_the_curriculum_grows(tmp_path):
    small = _rows(30)
    grown = small + _rows(60)[30:]
    train_a, val_a = nemo_data.split_examples(small, 0.2)
    train_b, val_b = nemo_data.split_examples(list(reversed(grown)), 0.2)
    assert nemo_data.split_examples(small, 0.2) == (train_a, val_a)
    assert not {r["review"] for r in train_a} & {r["review"] for r in val_a}
    assert {r["review"] for r in val_a} <= {r["review"] for r in val_b}
    assert {r["review"] for r in train_a} <= {r["review"] for r in train_b}
    assert 0 < len(val_b) < len(grown)


def test_files_are_byte_identical_across_runs_and_one_validation_row_is_guaranteed(tmp_path):
    src = _write(tmp_path / "c.jsonl", _rows(3))
    for name in ("a", "b"):
        nemo_data.write_nemo_dataset(src, tmp_path / name, validation_fraction=0.01, seed=7)
    for file in ("training.jsonl", "validation.jsonl"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert len(_read(tmp_path / "a" / "validation.jsonl")) == 1


def _explained_rows(n):
    """Every third row explained; the others have a blank, a null or (an older curriculum's
    row) no explanation column at all."""
    rows = _rows(n)
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row.update(explanation=f"Why {i}: it matters.", explanation_source="llm-teacher/x")
        elif i % 3 == 1:
            row.update(explanation=" " if i % 2 else None, explanation_source=None)
    return rows


def test_rows_with_an_explanation_also_teach_it_on_their_side_of_the_split(tmp_path):
    rows = _explained_rows(30)
    src = _write(tmp_path / "c.jsonl", rows)
    # explanation_weight 1: an explanation row is repeated like its severity row.
    summary = nemo_data.write_nemo_dataset(src, tmp_path / "nemo", 0.3, 2, 0, 1.0)
    train_src, val_src = nemo_data.split_examples(nemo_data.read_curriculum(src), 0.3)
    explained = {r["review"]: r["explanation"] for r in rows[::3]}  # see _explained_rows
    assert summary.explanation_examples == len(explained) == 10
    for name, side, repeats in (("training", train_src, 2), ("validation", val_src, 1)):
        records = _read(tmp_path / "nemo" / f"{name}.jsonl")
        texts = [r["explanation"] for r in records if r["task"] == "explanation"]
        expected = sorted(explained[e["review"]] for e in side if e["review"] in explained)
        assert sorted(texts) == sorted(expected * repeats)
        assert len(records) == repeats * (len(side) + len(expected))
    training = _read(tmp_path / "nemo" / "training.jsonl")
    row = next(r for r in train_src if r["review"] in explained)
    expected_row = nemo_data.task_row(
        "explanation", row["code"], row["review"], row["severity"], row["explanation"]
    )
    assert expected_row in training


def test_the_explanation_weight_scales_explanation_rows_and_zero_drops_them(tmp_path):
    src = _write(tmp_path / "c.jsonl", _explained_rows(30))
    counts = {}
    for weight in (0.0, 0.5, 1.0):
        out = tmp_path / str(weight)
        nemo_data.write_nemo_dataset(src, out, 0.0, 2, 0, weight)
        tasks = [r["task"] for r in _read(out / "training.jsonl")]
        counts[weight] = (tasks.count("severity"), tasks.count("explanation"))
    assert counts[0.0] == (60, 0)
    assert counts[0.5] == (60, 10)  # weight 1 x 0.5 x scale 2 = one copy
    assert counts[1.0] == (60, 20)


@pytest.fixture(scope="module")
def tokenizer(cache_dir):
    from flywheel_core.ml.base_model import load_tokenizer, resolve_base_model

    return load_tokenizer(resolve_base_model("tiny-llama", cache_dir))


def test_the_recipe_dataset_is_the_peft_prompt_with_loss_on_the_answer_only(tmp_path, tokenizer):
    rows = _explained_rows(6)
    rows[0]["code"] = "def f():\n" + "    x = 1\n" * 200  # cut to max_prompt_tokens
    src = _write(tmp_path / "c.jsonl", rows)
    nemo_data.write_nemo_dataset(src, tmp_path / "nemo", 0.0, 1, 0, 1.0)
    path = tmp_path / "nemo" / "training.jsonl"
    dataset = nemo_data.sft_dataset(str(path), tokenizer, max_prompt_tokens=192)
    records = _read(path)
    assert len(dataset) == len(records) == 8
    for record, index in zip(records, range(len(dataset)), strict=True):
        item = dataset[index]
        args = (tokenizer, record["code"], record["review"])
        if record["task"] == "severity":
            prompt = build_prompt(*args, 192)
            completion = completion_ids(tokenizer, record["severity"])
        else:
            prompt = build_explain_prompt(*args, record["severity"], 192)
            completion = explanation_completion_ids(tokenizer, record["explanation"], 96)
        ids = prompt + completion
        assert len(prompt) <= 192
        assert item["input_ids"] == ids[:-1]
        assert item["labels"] == [-100] * (len(prompt) - 1) + completion
        assert item["attention_mask"] == [1] * (len(ids) - 1)
        assert item["___PAD_TOKEN_IDS___"]["labels"] == -100
    first = dataset[0]
    first.pop("___PAD_TOKEN_IDS___")  # default_collater pops it in place
    assert "___PAD_TOKEN_IDS___" in dataset[0]


def test_a_large_validation_fraction_still_leaves_a_training_row():
    training, validation = nemo_data.split_examples(_rows(2), 0.999)
    assert len(training) == 1 and len(validation) == 1


def test_the_label_loss_keeps_only_the_labels_first_token(tmp_path, tokenizer):
    src = _write(tmp_path / "c.jsonl", _explained_rows(3))
    nemo_data.write_nemo_dataset(src, tmp_path / "nemo", 0.0, 1, 0, 1.0)
    path = str(tmp_path / "nemo" / "training.jsonl")
    full = nemo_data.sft_dataset(path, tokenizer, 192)
    label = nemo_data.sft_dataset(path, tokenizer, 192, loss="label")
    for index, record in enumerate(_read(tmp_path / "nemo" / "training.jsonl")):
        kept = [t for t in label[index]["labels"] if t != -100]
        completion = [t for t in full[index]["labels"] if t != -100]
        assert label[index]["input_ids"] == full[index]["input_ids"]
        if record["task"] == "severity":
            assert kept == completion[:1] == completion_ids(tokenizer, record["severity"])[:1]
        else:
            assert kept == completion  # the explanation task trains on the whole text
    with pytest.raises(ValueError, match="loss"):
        nemo_data.sft_dataset(path, tokenizer, 192, loss="kl")
