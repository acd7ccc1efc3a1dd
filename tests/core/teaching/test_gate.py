"""Protects the deployment gate: it decides on the reviewers' held-out feedback once there is
enough of it, reads differences inside the 95% interval as noise, and blocks candidates that
drop beyond it, collapse a class or answer one label everywhere."""

from __future__ import annotations

from flywheel_core.settings import GateSettings
from flywheel_core.teaching.gate import judge
from flywheel_core.teaching.heldout_sets import compare_on_set

ORDER = ["critical", "major", "minor", "trivial"]


def labels(counts: dict[str, int]) -> list[str]:
    return [c for c in ORDER for _ in range(counts.get(c, 0))]


def answers_with_accuracy(truth: list[str], correct: int, start: int = 0) -> list[str]:
    """Items start..start+correct-1 right, the others answered with the next class."""
    right = range(start, start + correct)
    return [t if i in right else ORDER[(ORDER.index(t) + 1) % 4] for i, t in enumerate(truth)]


def interleaved(truth: list[str]) -> list[str]:
    """Spread the classes so a prefix of the list has every class."""
    groups = {c: [t for t in truth if t == c] for c in ORDER}
    out = []
    while any(groups.values()):
        for c in ORDER:
            if groups[c]:
                out.append(groups[c].pop())
    return out


SEED = interleaved(labels({"critical": 20, "major": 25, "minor": 24, "trivial": 20}))  # 89
REVIEWERS = interleaved(labels({"critical": 14, "major": 40, "minor": 38, "trivial": 58}))  # 150


def comparison(
    truth: list[str], incoming_correct: int, candidate_correct: int, shift: int = 0
) -> dict:
    """The candidate is right on a window shifted by `shift` items: it loses some items the
    serving model got and gains others, as real models do."""
    return compare_on_set(
        truth,
        answers_with_accuracy(truth, incoming_correct),
        answers_with_accuracy(truth, candidate_correct, start=shift),
    )


def test_gate_passes_a_reviewer_gain_with_a_seed_drop_inside_the_interval():
    """+14 points on 150 reviewer items, -4 points on the 89 seed items (inside the paired
    interval): the gate decides on the reviewers' set and deploys."""
    sets = {"reviewers": comparison(REVIEWERS, 60, 81), "seed": comparison(SEED, 50, 46, shift=8)}
    verdict = judge(sets, GateSettings())
    assert sets["seed"]["delta"] < 0 and sets["seed"]["delta_high"] > 0
    assert verdict.passed, verdict.reasons
    assert verdict.decision_set == "reviewers"
    assert verdict.summary[0].startswith("reviewers (150 items)")


def test_gate_blocks_a_drop_on_the_reviewers_set_even_when_the_seed_split_improves():
    sets = {"reviewers": comparison(REVIEWERS, 90, 60), "seed": comparison(SEED, 40, 60)}
    verdict = judge(sets, GateSettings())
    assert not verdict.passed
    assert verdict.reasons[0].startswith("reviewers accuracy drops beyond the noise")
    assert "150 items" in verdict.reasons[0] and "60.0% -> 40.0%" in verdict.reasons[0]


def test_gate_blocks_a_seed_drop_beyond_the_interval_as_a_guard():
    sets = {"reviewers": comparison(REVIEWERS, 60, 70), "seed": comparison(SEED, 70, 35)}
    verdict = judge(sets, GateSettings())
    assert not verdict.passed and verdict.reasons[0].startswith("seed accuracy drops")


def test_gate_decides_on_the_seed_split_until_the_reviewers_set_is_large_enough():
    small = REVIEWERS[:40]
    sets = {"reviewers": comparison(small, 10, 30), "seed": comparison(SEED, 70, 35)}
    verdict = judge(sets, GateSettings())
    assert verdict.decision_set == "seed" and not verdict.passed
    assert judge(sets, GateSettings(min_reviewer_items=40)).decision_set == "reviewers"


def test_gate_blocks_answers_concentrated_on_one_class():
    """The issue's failure: 'major' for most reviewer comments. Accuracy does not excuse it."""
    truth = REVIEWERS
    incoming = answers_with_accuracy(truth, 75)  # balanced errors
    candidate = [t if t == "major" else "major" for t in truth[:130]] + truth[130:]
    sets = {
        "reviewers": compare_on_set(truth, incoming, candidate),
        "seed": comparison(SEED, 50, 50),
    }
    verdict = judge(sets, GateSettings(max_accuracy_drop=1.0))
    assert not verdict.passed
    assert verdict.concentrated == {"reviewers": ["major"]}
    assert "answers concentrate" in " ".join(verdict.reasons)


def test_gate_allows_concentration_the_serving_model_already_had():
    """Against a base model that says 'critical' to everything, the first adapter is judged on
    accuracy: the degenerate serving model has no distribution to protect."""
    truth = SEED
    base = ["critical"] * len(truth)
    candidate = answers_with_accuracy(truth, 50)
    verdict = judge({"seed": compare_on_set(truth, base, candidate)}, GateSettings())
    assert verdict.passed, verdict.reasons


def test_gate_blocks_a_class_collapsing_to_zero_recall():
    truth = SEED
    incoming = answers_with_accuracy(truth, 60)
    candidate = [("major" if t == "minor" else t) for t in truth]  # never says minor
    verdict = judge({"seed": compare_on_set(truth, incoming, candidate)}, GateSettings())
    assert not verdict.passed and verdict.collapsed == ["minor"]
    relaxed = GateSettings(block_recall_collapse=False)
    assert judge({"seed": compare_on_set(truth, incoming, candidate)}, relaxed).passed


def test_gate_reads_a_rare_class_found_once_then_missed_as_noise():
    """Seed 1 of the reviewer benchmark: the serving model found 3 of 11 critical comments, the
    candidate none, while accuracy rose. Losing three hits is noise; losing six is a lost class."""
    truth = interleaved(labels({"critical": 11, "major": 27, "minor": 26, "trivial": 38}))  # 102
    found_critical = [i for i, t in enumerate(truth) if t == "critical"]

    def serving(hits: int) -> list[str]:
        out = answers_with_accuracy(truth, 45)
        for n, i in enumerate(found_critical):
            out[i] = "critical" if n < hits else "major"
        return out

    candidate = [("major" if t == "critical" else t) for t in truth]  # never says critical
    candidate = [c if i % 3 else ORDER[(ORDER.index(c) + 1) % 4] for i, c in enumerate(candidate)]
    noisy = compare_on_set(truth, serving(3), candidate)
    assert noisy["incoming"]["per_class"]["critical"]["recall"] > 0
    assert noisy["candidate"]["per_class"]["critical"]["recall"] == 0
    seed = comparison(SEED, 50, 50)
    verdict = judge({"reviewers": noisy, "seed": seed}, GateSettings())
    assert verdict.decision_set == "reviewers"
    assert verdict.collapsed == [] and verdict.passed, verdict.reasons

    lost = compare_on_set(truth, serving(6), candidate)
    lost = judge({"reviewers": lost, "seed": seed}, GateSettings())
    assert lost.collapsed == ["critical"] and not lost.passed
