"""Protects explanation_preference's judging: a position-biased judge yields ties, a consistent
one counts wins and losses, no valid verdict is invalid and not a tie (scripted judges)."""

import polars as pl
import pytest

from flywheel_assets.assets.step08_explanation_preference import judge_pairs
from flywheel_core.domain import JudgeRequest, JudgeVerdict
from flywheel_core.settings import TeacherSettings
from flywheel_core.teaching.judge_sample import sample_references
from flywheel_core.teaching.preference import tally
from resources.teacher.base import Teacher

SETTINGS = TeacherSettings()

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

    def write_exam(self, request, settings):
        raise NotImplementedError

    def evaluate_exam(self, request, settings):
        raise NotImplementedError

    def judge_once(self, request: JudgeRequest, settings: TeacherSettings) -> JudgeVerdict:
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
        ScriptedJudge(rule="first"),
        SETTINGS,
        "c",
        SAMPLE,
        REFS,
        texts("good"),
        texts("bad"),
        "base",
    )
    result = tally(pairs)
    assert (result.wins, result.ties, result.losses) == (0, 6, 0)
    assert result.differential == 0.0
    assert all("position bias" in p.reason for p in pairs)


def test_a_consistent_judge_counts_wins_and_losses() -> None:
    judge = ScriptedJudge(rule="good")
    candidate = {**texts("good"), "i4": "bad one", "i5": "bad two"}
    other = {**texts("bad"), "i5": "good too"}
    result = tally(judge_pairs(judge, SETTINGS, "c", SAMPLE, REFS, candidate, other, "base"))
    # i0..i3 wins, i4 tie (neither says good), i5 loss
    assert (result.wins, result.ties, result.losses, result.invalid) == (4, 1, 1, 0)
    assert result.differential == pytest.approx(0.5)


def test_no_valid_verdict_is_not_judged_not_a_tie() -> None:
    pairs = judge_pairs(
        ScriptedJudge(rule="invalid"), SETTINGS, "c", SAMPLE, REFS, texts("a"), texts("b"), "b"
    )
    result = tally(pairs)
    assert result.invalid == 6 and result.ties == 0 and result.pairs == 6
    # Nothing was judged: no zero-width interval pretending the models are equal.
    assert (result.differential, result.ci_low, result.ci_high) == (0.0, -1.0, 1.0)
    mixed = tally(
        [
            *pairs[:3],
            *judge_pairs(
                ScriptedJudge(rule="good"),
                SETTINGS,
                "c",
                SAMPLE,
                REFS,
                texts("good"),
                texts("bad"),
                "b",
            )[:3],
        ]
    )
    assert (mixed.wins, mixed.ties, mixed.invalid, mixed.differential) == (3, 0, 3, 1.0)
