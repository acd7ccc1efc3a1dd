"""Protects the held-out numbers: intervals, the feedback hold-out split, the step rule."""

from __future__ import annotations

import hashlib

import pytest

from flywheel_core.feedback.holdout import is_held_out
from flywheel_core.settings import TrainingSettings
from flywheel_core.teaching.heldout_sets import concentrated_classes, load_eval_set, score_set
from flywheel_core.teaching.intervals import bootstrap_macro_f1, paired_difference, wilson
from flywheel_core.teaching.step_budget import new_per_batch, steps_for_cycle


def test_wilson_interval_brackets_the_proportion_and_narrows_with_n():
    low, high = wilson(60, 100)
    assert low < 0.6 < high and high - low == pytest.approx(0.19, abs=0.01)
    low2, high2 = wilson(600, 1000)
    assert high2 - low2 < (high - low) / 2


def test_paired_difference_is_tighter_than_independent_intervals():
    truth = ["minor"] * 100
    first = ["minor"] * 60 + ["major"] * 40
    second = ["minor"] * 65 + ["major"] * 35  # 5 more right, none lost
    delta, low, high = paired_difference(truth, first, second)
    assert delta == pytest.approx(0.05) and 0 < low < delta < high < 0.1


def test_bootstrap_macro_f1_is_reproducible():
    truth = ["minor", "major", "trivial", "critical"] * 20
    predicted = ["minor", "minor", "trivial", "critical"] * 20
    assert bootstrap_macro_f1(truth, predicted) == bootstrap_macro_f1(truth, predicted)
    low, high = bootstrap_macro_f1(truth, predicted)
    assert low <= score_set(truth, predicted)["macro_f1"] <= high


def test_score_set_reports_answer_distribution_and_concentration():
    truth = ["trivial"] * 40 + ["major"] * 30 + ["minor"] * 30
    predicted = ["major"] * 100
    score = score_set(truth, predicted)
    assert score["answers"]["major"] == 1.0 and score["majority"] == 0.4
    assert concentrated_classes(score, 0.35) == ["major"]
    assert concentrated_classes(score_set(truth, truth), 0.35) == []


def test_hold_out_share_is_deterministic_and_close_to_the_setting():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    held = [h for h in hashes if is_held_out(h, 0.15)]
    assert 0.13 < len(held) / len(hashes) < 0.17
    assert held == [h for h in hashes if is_held_out(h, 0.15)]
    assert not any(is_held_out(h, 0.0) for h in hashes)
    with pytest.raises(ValueError):
        is_held_out(hashes[0], 1.0)


def test_steps_follow_the_new_data_within_the_bounds():
    training = TrainingSettings()  # 3 passes, replay 0.5, batch 8, 80..320 steps
    assert new_per_batch(8, 0.5) == 4
    assert steps_for_cycle(160, 0, training)[0] == 80  # first cycle: 60 wanted, minimum 80
    assert steps_for_cycle(160, 160, training)[0] == 120  # a seed-only cycle: 3 x 160 / 4
    steps, why = steps_for_cycle(388, 500, training)  # a feedback batch joins
    assert steps == 291 and "388 new examples" in why
    steps, why = steps_for_cycle(2000, 500, training)
    assert steps == 320 and "cap max_steps_per_cycle" in why


def test_registered_eval_set_is_validated(tmp_path):
    path = tmp_path / "team.jsonl"
    path.write_text(
        '{"code": "x = 1", "review": "name it", "severity": "trivial"}\n'
        '{"code": "y()", "review": "crashes", "severity": "critical"}\n'
    )
    frame = load_eval_set("team", str(path))
    assert frame.height == 2 and frame["item_id"][0].startswith("team:")
    path.write_text('{"code": "x", "review": "r", "severity": "blocker"}\n')
    with pytest.raises(ValueError, match="team.jsonl:1 has severity 'blocker'"):
        load_eval_set("team", str(path))
