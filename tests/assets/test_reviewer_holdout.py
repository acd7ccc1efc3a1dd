"""Protects the reviewers' held-out set: a feedback batch's held-out rows never reach an exam,
a teacher example, a curriculum or a training file, and they are what heldout_evaluation scores
as the `reviewers` set (tiny student, a bootstrap cycle and one feedback cycle)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import TINY_OVERRIDES
from tests.support.feedback_files import drop
from tests.support.flywheel_runner import latest_metadata, run_cycles

SEVERITIES = ["critical", "major", "minor", "trivial"]


def batch(rows: int) -> bytes:
    lines = [
        json.dumps(
            {
                "code": f"def handler_{i}(request):\n    return process(request.args[{i}])",
                "review": f"reviewer note {i}: the argument {i} is not validated",
                "severity": SEVERITIES[i % 4],
            }
        )
        for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def fed(tmp_path_factory, cache_dir):
    home = tmp_path_factory.mktemp("holdout-home")
    drop(home / "feedback", "team-1.jsonl", batch(60))
    registered = home / "team-eval.jsonl"
    registered.write_bytes(batch(70).split(b"\n", 60)[-1])  # 10 rows never fed
    env = {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}
    overrides = [
        *TINY_OVERRIDES,
        "feedback.heldout_share=0.25",
        f"heldout.extra_sets={{team-eval: {registered}}}",
    ]
    defs, instance = run_cycles(home, env, ["bootstrap", "team-1"], overrides)
    return home, defs.resources["store"], instance


def test_held_out_rows_never_reach_training_or_exams(fed):
    home, store, _ = fed
    feedback = store.query("SELECT item_id, review, heldout FROM feedback WHERE cycle = 'team-1'")
    held = feedback.filter(pl.col("heldout"))
    assert feedback.height == 60 and 5 <= held.height <= 25
    held_ids, held_reviews = set(held["item_id"]), set(held["review"])
    for table in ("exams", "curricula", "teacher_examples"):
        used = store.query(f"SELECT item_id, review FROM {table}")
        assert not held_ids & set(used["item_id"]), table
        assert not held_reviews & set(used["review"]), table
    training_file = Path(home) / "work" / "team-1" / "curriculum.jsonl"
    trained = {json.loads(line)["review"] for line in training_file.read_text().splitlines()}
    assert not held_reviews & trained
    # The rest of the batch does reach the curriculum.
    kept = set(feedback.filter(~pl.col("heldout"))["review"])
    assert kept <= set(store.query("SELECT review FROM curricula WHERE cycle = 'team-1'")["review"])


def test_held_out_rows_are_the_reviewers_evaluation_set(fed):
    _, store, instance = fed
    held = store.query("SELECT count(*) AS n FROM feedback WHERE heldout")["n"][0]
    results = store.query(
        "SELECT eval_set, role, items, accuracy_low, accuracy, accuracy_high, answers, decides "
        "FROM heldout_results WHERE cycle = 'team-1' ORDER BY eval_set, role"
    )
    reviewers = results.filter(pl.col("eval_set") == "reviewers")
    assert reviewers["items"].to_list() == [held, held]
    assert all(
        lo <= a <= hi
        for lo, a, hi in reviewers.select("accuracy_low", "accuracy", "accuracy_high").iter_rows()
    )
    assert sum(json.loads(reviewers["answers"][0]).values()) == pytest.approx(1.0)
    # Fewer than gate.min_reviewer_items held-out rows: the seed split decides.
    assert results.filter(pl.col("decides"))["eval_set"].unique().to_list() == ["seed"]
    metadata = latest_metadata(instance, "heldout_evaluation", "team-1")
    assert metadata["reviewers items"] == held and metadata["gate_decides_on"] == "seed"
    intake = latest_metadata(instance, "reviewer_feedback", "team-1")
    assert intake["held_out_for_evaluation"] == held
    assert intake["accepted"] + intake["quarantined"] == intake["received"] == 60
    # A registered set is scored every cycle (reported, not gated).
    team = results.filter(pl.col("eval_set") == "team-eval")
    assert team["items"].to_list() == [10, 10] and not any(team["decides"])
    # The bootstrap cycle had no feedback: the seed split and the registered set only.
    bootstrap = store.query(
        "SELECT DISTINCT eval_set FROM heldout_results WHERE cycle = 'bootstrap' ORDER BY 1"
    )
    assert bootstrap["eval_set"].to_list() == ["seed", "team-eval"]
