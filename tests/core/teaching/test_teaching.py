"""Protects the corpus teacher's arithmetic: metrics, exam allocation, examples near errors."""

from __future__ import annotations

import pytest

from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.exam_design import allocate, draw_questions
from flywheel_core.teaching.example_selection import select_examples
from flywheel_core.teaching.metrics import (
    classification_report,
    proficiency,
    written_feedback,
)


def test_report_on_a_known_confusion():
    truth = ["critical", "critical", "major", "minor", "trivial", "trivial"]
    pred = ["critical", "major", "major", "critical", "trivial", "minor"]
    report = classification_report(truth, pred)
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["confusion"]["critical"]["major"] == 1
    assert report["per_class"]["critical"]["precision"] == pytest.approx(1 / 2)
    assert report["per_class"]["critical"]["recall"] == pytest.approx(1 / 2)
    assert report["per_class"]["minor"]["recall"] == 0.0
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 6


def test_proficiency_spans_one_to_ten():
    all_critical = classification_report(list(SEVERITIES) * 5, ["critical"] * 20)
    perfect = classification_report(list(SEVERITIES) * 5, list(SEVERITIES) * 5)
    assert proficiency(all_critical) == 2
    assert proficiency(perfect) == 10


def test_feedback_names_weak_and_confused_classes():
    report = classification_report(["minor"] * 4 + ["major"] * 4, ["critical"] * 4 + ["major"] * 4)
    text = written_feedback(report)
    assert "minor (recall 0%)" in text
    assert "minor rated as critical 4x" in text


def test_allocation_is_even_first_then_tilts_to_weak_classes():
    assert allocate(40, None, 0.15) == dict.fromkeys(SEVERITIES, 10)
    tilted = allocate(40, {"critical": 1.0, "major": 0.2, "minor": 0.0, "trivial": 0.9}, 0.15)
    assert sum(tilted.values()) == 40
    assert tilted["minor"] > tilted["major"] > tilted["trivial"] >= tilted["critical"] >= 6


def test_draw_questions_prefers_unseen_items_and_is_deterministic():
    pool = [
        {"item_id": f"{c}-{i}", "severity": c, "code": "", "review": ""}
        for c in SEVERITIES
        for i in range(5)
    ]
    seen = {f"{c}-{i}" for c in SEVERITIES for i in range(3)}
    first = draw_questions(pool, dict.fromkeys(SEVERITIES, 2), "k", avoid_ids=seen)
    again = draw_questions(pool, dict.fromkeys(SEVERITIES, 2), "k", avoid_ids=seen)
    assert first == again
    assert not {q["item_id"] for q in first} & seen


def test_examples_are_drawn_near_the_errors():
    pool = [
        {
            "item_id": "near",
            "severity": "minor",
            "code": "f = open(path)",
            "review": "file handle leaks",
        },
        {"item_id": "far", "severity": "minor", "code": "x = 1", "review": "odd loop bound"},
        {"item_id": "held", "severity": "minor", "code": "open(p)", "review": "file handle leaks"},
    ]
    graded = [
        {
            "item_id": "q1",
            "severity": "minor",
            "predicted": "critical",
            "code": "fh = open(name)",
            "review": "the file handle leaks here",
        },
    ]
    chosen = select_examples(graded, pool, {"minor": 1}, exclude_ids={"held"}, salt="s")
    assert [c["item_id"] for c in chosen] == ["near"]
    assert chosen[0]["near_error_similarity"] > 0.3
