"""Protects the curriculum -> NeMo chat JSONL conversion: roles, answer, weights, split, and the
explanation examples of rows that have a reference explanation."""

from __future__ import annotations

import json

import pytest

from flywheel_core.ml import nemo_data
from flywheel_core.ml.explanation_prompt import render_explain_messages
from flywheel_core.ml.severity_prompt import render_messages


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


def test_a_record_is_system_user_assistant_with_the_json_answer():
    record = nemo_data.chat_record("import os", "os is unused", "trivial")
    roles = [m["role"] for m in record["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert record["messages"][:2] == render_messages("import os", "os is unused")
    assert json.loads(record["messages"][2]["content"]) == {"severity": "trivial"}
    assert record["messages"][2]["content"] == '{"severity": "trivial"}'


def test_an_unknown_label_is_refused():
    with pytest.raises(ValueError, match="unknown severity"):
        nemo_data.chat_record("", "r", "blocker")


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
    users = [r["messages"][1]["content"] for r in training]
    assert all(users.count(u) == 3 for u in users)


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


def _fake_template(messages):
    return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_rendering_puts_the_templated_prompt_in_input_and_the_answer_in_output(tmp_path):
    src = _write(tmp_path / "c.jsonl", _rows(12))
    nemo_data.write_nemo_dataset(src, tmp_path / "chat", validation_fraction=0.3)
    counts = nemo_data.render_completion_dataset(
        tmp_path / "chat", tmp_path / "sft", _fake_template
    )
    chat = _read(tmp_path / "chat" / "training.jsonl")
    sft = _read(tmp_path / "sft" / "training.jsonl")
    assert counts == {
        "training.jsonl": len(chat),
        "validation.jsonl": len(_read(tmp_path / "chat" / "validation.jsonl")),
    }
    assert [set(r) for r in sft] == [{"input", "output"}] * len(chat)
    assert sft[0]["input"] == _fake_template(chat[0]["messages"][:2])
    assert sft[0]["output"] == chat[0]["messages"][2]["content"]
    assert json.loads(sft[0]["output"])["severity"] in ("critical", "major", "minor", "trivial")


def test_a_record_without_an_answer_is_refused():
    with pytest.raises(ValueError, match="assistant"):
        nemo_data.completion_record({"messages": [{"role": "user", "content": "x"}]}, str)


def test_an_explanation_record_asks_why_and_answers_with_the_explanation():
    record = nemo_data.explanation_record("import os", "os is unused", "trivial", " Trivial. \n")
    assert record["messages"][:2] == render_explain_messages("import os", "os is unused", "trivial")
    assert record["messages"][2] == {"role": "assistant", "content": "Trivial."}


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
    summary = nemo_data.write_nemo_dataset(src, tmp_path / "nemo", 0.3, repeat_scale=2)
    train_src, val_src = nemo_data.split_examples(nemo_data.read_curriculum(src), 0.3)
    explained = {r["review"]: r["explanation"] for r in rows[::3]}  # see _explained_rows
    assert summary.explanation_examples == len(explained) == 10
    for name, side, repeats in (("training", train_src, 2), ("validation", val_src, 1)):
        records = _read(tmp_path / "nemo" / f"{name}.jsonl")
        answers = [r["messages"][2]["content"] for r in records]
        expected = sorted(explained[e["review"]] for e in side if e["review"] in explained)
        assert sorted(a for a in answers if not a.startswith("{")) == sorted(expected * repeats)
        assert len(records) == repeats * (len(side) + len(expected))
    training = _read(tmp_path / "nemo" / "training.jsonl")
    row = next(r for r in train_src if r["review"] in explained)
    asked = render_explain_messages(row["code"], row["review"], row["severity"])
    assert {"messages": [*asked, {"role": "assistant", "content": row["explanation"]}]} in training


def test_explanation_examples_render_with_the_text_as_output(tmp_path):
    src = _write(tmp_path / "c.jsonl", _explained_rows(12))
    nemo_data.write_nemo_dataset(src, tmp_path / "chat", validation_fraction=0.2)
    nemo_data.render_completion_dataset(tmp_path / "chat", tmp_path / "sft", _fake_template)
    outputs = [r["output"] for r in _read(tmp_path / "sft" / "training.jsonl")]
    assert any(o.startswith("Why ") for o in outputs)
    assert any(o.startswith('{"severity"') for o in outputs)


def test_a_large_validation_fraction_still_leaves_a_training_row():
    training, validation = nemo_data.split_examples(_rows(2), 0.999)
    assert len(training) == 1 and len(validation) == 1
