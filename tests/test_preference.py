"""Protects the explanation judge's arithmetic: order swap, wins / ties / losses, differential
and its confidence interval, on scripted judges."""

import math

import polars as pl
import pytest

from flywheel_assets.assets.explanations import judge_pairs, judge_sample, sample_references
from flywheel_assets.teaching.preference import (
    PairResult,
    combine_orders,
    flip,
    judge_both_orders,
    tally,
)
from resources.teacher import JudgeRequest, JudgeVerdict, Teacher

SAMPLE = pl.DataFrame(
    [
        {
            "item_id": f"i{k}",
            "source": "pylint",
            "code": "x = eval(s)\n",
            "review": "eval on input",
            "severity": ("critical", "major", "minor", "trivial")[k % 4],
            "good_code": "x = int(s)\n",
            "details": None,
        }
        for k in range(6)
    ]
)

REFS = sample_references(SAMPLE)


class ScriptedJudge(Teacher):
    """`judge_once` follows a rule on the two texts as shown (A first)."""

    rule: str  # "first" | "good" | "invalid"

    @property
    def teacher_id(self) -> str:
        return f"scripted/{self.rule}"

    def write_exam(self, request):
        raise NotImplementedError

    def evaluate_exam(self, request):
        raise NotImplementedError

    def judge_once(self, request: JudgeRequest) -> JudgeVerdict:
        if self.rule == "first":
            winner, valid = "A", True
        elif self.rule == "good":
            a, b = "good" in request.explanation_a, "good" in request.explanation_b
            winner, valid = ("A" if a else "B") if a != b else "tie", True
        else:
            winner, valid = "tie", False
        return JudgeVerdict(
            winner=winner, reason=self.rule, teacher=self.teacher_id, prompt_sha256="-", valid=valid
        )


def texts(word: str) -> dict[str, str]:
    return {f"i{k}": f"{word} explanation {k}" for k in range(6)}


def test_a_judge_that_always_prefers_the_first_position_yields_ties() -> None:
    pairs = judge_pairs(
        ScriptedJudge(rule="first"), "c", SAMPLE, REFS, texts("good"), texts("bad"), "base"
    )
    result = tally(pairs)
    assert (result.wins, result.ties, result.losses) == (0, 6, 0)
    assert result.differential == 0.0
    assert all("position bias" in p.reason for p in pairs)


def test_a_consistent_judge_counts_wins_and_losses() -> None:
    judge = ScriptedJudge(rule="good")
    candidate = {**texts("good"), "i4": "bad one", "i5": "bad two"}
    other = {**texts("bad"), "i5": "good too"}
    result = tally(judge_pairs(judge, "c", SAMPLE, REFS, candidate, other, "base"))
    # i0..i3 wins, i4 tie (neither says good), i5 loss
    assert (result.wins, result.ties, result.losses, result.invalid) == (4, 1, 1, 0)
    assert result.differential == pytest.approx(0.5)


def test_no_valid_verdict_is_an_invalid_tie() -> None:
    pairs = judge_pairs(
        ScriptedJudge(rule="invalid"), "c", SAMPLE, REFS, texts("a"), texts("b"), "b"
    )
    result = tally(pairs)
    assert result.invalid == 6 and result.ties == 6 and result.differential == 0.0


def test_differential_and_confidence_interval_arithmetic() -> None:
    outcomes = ["candidate"] * 6 + ["tie"] * 2 + ["baseline"] * 2
    result = tally([PairResult(str(i), "c", "b", w, "") for i, w in enumerate(outcomes)])
    scores = [1] * 6 + [0] * 2 + [-1] * 2
    mean = sum(scores) / 10
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / 9)
    assert result.differential == pytest.approx(0.4)
    assert result.ci_low == pytest.approx(mean - 1.959964 * sd / math.sqrt(10), abs=1e-4)
    assert result.ci_high == pytest.approx(min(1.0, mean + 1.959964 * sd / math.sqrt(10)), abs=1e-4)
    everything = tally([PairResult(str(i), "c", "b", "candidate", "") for i in range(5)])
    assert (everything.differential, everything.ci_low, everything.ci_high) == (1.0, 1.0, 1.0)
    assert tally([]).pairs == 0


def test_order_combination_rules() -> None:
    assert flip("A") == "B" and flip("tie") == "tie" and flip(None) is None
    assert combine_orders("A", "A") == "A"
    assert combine_orders("A", "B") == "tie"
    assert combine_orders(None, "B") == "B"
    assert combine_orders(None, None) is None
    calls = []

    def once(first, second):
        calls.append((first, second))
        return "A", "first shown wins"

    assert judge_both_orders(once, "x", "y")[0] == "tie"
    assert calls == [("x", "y"), ("y", "x")]


def test_judge_sample_is_fixed_and_stratified() -> None:
    items = pl.DataFrame(
        [
            {"item_id": f"h{k:03d}", "severity": ("critical", "major", "minor", "trivial")[k % 4]}
            for k in range(40)
        ]
    )
    first = judge_sample(items, 8)
    assert first.equals(judge_sample(items.reverse(), 8))
    assert first["severity"].value_counts()["count"].to_list() == [2, 2, 2, 2]
    assert first["item_id"].to_list() != items.head(8)["item_id"].to_list()
    assert judge_sample(items.head(3), 8).height == 3
