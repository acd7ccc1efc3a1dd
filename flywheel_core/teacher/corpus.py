"""The offline corpus teacher: exams, grades, new examples and judgements by code over real data.

Exams are balanced across severities and tilted toward those the last evaluation found weak;
proficiency comes from the exam's macro-F1; new examples are the pool items most similar to the
questions the student got wrong, with more of them for weaker severities. The judge is a
documented proxy (see `flywheel_core.teaching.explanation_judge`), not a coin.
"""

from __future__ import annotations

from flywheel_core.domain import (
    EvaluationRequest,
    EvaluationResult,
    ExamRequest,
    ExamResult,
    Item,
    JudgeRequest,
    JudgeVerdict,
    with_reference,
)
from flywheel_core.prompts import prompt_sha256
from flywheel_core.teaching.exam_design import allocate, draw_questions
from flywheel_core.teaching.example_selection import select_examples
from flywheel_core.teaching.explanation_judge import judge_by_proxy
from flywheel_core.teaching.metrics import proficiency, written_feedback
from flywheel_core.teaching.reference_explanations import SOURCE as REFERENCE_SOURCE

TEACHER_ID = "corpus-teacher/1"


def write_exam(request: ExamRequest) -> ExamResult:
    allocation = allocate(
        request.num_questions, request.previous_strengths, request.min_share_per_class
    )
    pool = [item.model_dump() for item in request.pool]
    questions = draw_questions(pool, allocation, salt=request.cycle, avoid_ids=request.avoid_ids)
    return ExamResult(
        questions=[Item.model_validate(q) for q in questions],
        allocation=allocation,
        teacher=TEACHER_ID,
        prompt_sha256=prompt_sha256("exam_generation"),
    )


def evaluate_exam(request: EvaluationRequest) -> EvaluationResult:
    strengths = {c: v["f1"] for c, v in request.report["per_class"].items()}
    quotas = allocate(request.num_new_examples, strengths, request.min_share_per_class)
    examples = select_examples(
        [q.model_dump() for q in request.graded],
        [item.model_dump() for item in request.pool],
        quotas,
        exclude_ids=request.exclude_ids,
        salt=request.cycle,
    )
    return EvaluationResult(
        proficiency=proficiency(request.report),
        feedback=written_feedback(request.report),
        new_examples=[with_reference(Item.model_validate(e)) for e in examples],
        teacher=TEACHER_ID,
        prompt_sha256=prompt_sha256("exam_evaluation"),
        notes=f"examples per severity requested: {quotas}; reference explanations built "
        f"from the corpus's rule docs and good/bad code ({REFERENCE_SOURCE}), or the "
        "reviewer's own",
    )


def judge_once(request: JudgeRequest) -> JudgeVerdict:
    verdict = judge_by_proxy(
        request.item.model_dump(), request.explanation_a, request.explanation_b, request.reference
    )
    return JudgeVerdict(
        winner=verdict.winner,
        reason=verdict.reason,
        scores={"A": verdict.score_a, "B": verdict.score_b},
        teacher=TEACHER_ID,
        prompt_sha256=prompt_sha256("judge_explanations"),
    )
