"""The teacher interface and the offline corpus teacher that implements it over real data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import dagster as dg
from pydantic import BaseModel, Field

from flywheel_assets.prompts import prompt_sha256
from flywheel_assets.teaching.exam_design import allocate, draw_questions
from flywheel_assets.teaching.example_selection import select_examples
from flywheel_assets.teaching.explanation_judge import judge_by_proxy
from flywheel_assets.teaching.metrics import proficiency, written_feedback
from flywheel_assets.teaching.preference import judge_both_orders
from flywheel_assets.teaching.reference_explanations import SOURCE as REFERENCE_SOURCE
from flywheel_assets.teaching.reference_explanations import corpus_reference


class Item(BaseModel):
    """A labelled finding: code, the reviewer's comment, and its severity."""

    item_id: str
    source: str
    code: str
    review: str
    severity: str
    # Reference explanation of the severity (second task), and who wrote it: the LLM teacher,
    # the corpus teacher's template over the data source's text, or a reviewer.
    explanation: str | None = None
    explanation_source: str | None = None
    # The data source's own material about the item (pylint rule docs and documented fix);
    # read by the corpus teacher, never stored with exams or examples.
    good_code: str | None = None
    details: str | None = None


SOURCE_MATERIAL = {"good_code", "details"}


def with_reference(item: Item) -> Item:
    """The item with a reference explanation: its own (a reviewer's) or one the corpus teacher
    builds from the data source's text; unchanged when neither exists."""
    if item.explanation:
        return item
    text = corpus_reference(item.severity, item.code, item.good_code, item.details)
    if text is None:
        return item
    return item.model_copy(update={"explanation": text, "explanation_source": REFERENCE_SOURCE})


class GradedQuestion(Item):
    predicted: str


class ExamRequest(BaseModel):
    cycle: str
    num_questions: int
    min_share_per_class: float
    pool: list[Item]
    avoid_ids: list[str] = Field(default_factory=list)
    previous_proficiency: int | None = None
    previous_feedback: str | None = None
    previous_strengths: dict[str, float] | None = None  # per-severity F1 of the last exam


class QuarantinedOutput(BaseModel):
    """A piece of a teacher reply that failed validation, kept with the reason."""

    call_key: str
    item_index: int  # -1: the reply (or one of its fields) as a whole
    raw: str
    reason: str


class TeacherUsage(BaseModel):
    """What the teacher's calls for one asset cost and how they went (metadata + ledger)."""

    calls: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    failed_calls: int = 0
    skipped_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cycle_cost_usd: float = 0.0
    cycle_tokens: int = 0
    output_modes: dict[str, int] = Field(default_factory=dict)
    repairs: dict[str, int] = Field(default_factory=dict)
    redactions: dict[str, int] = Field(default_factory=dict)
    budget_stop: str | None = None


class ExamResult(BaseModel):
    questions: list[Item]
    allocation: dict[str, int]
    teacher: str
    prompt_sha256: str
    quarantine: list[QuarantinedOutput] = Field(default_factory=list)
    usage: TeacherUsage | None = None
    notes: str = ""


class EvaluationRequest(BaseModel):
    cycle: str
    graded: list[GradedQuestion]
    report: dict  # exact metrics, computed by code before the teacher sees the exam
    pool: list[Item]
    exclude_ids: list[str] = Field(default_factory=list)
    num_new_examples: int
    min_share_per_class: float


class EvaluationResult(BaseModel):
    proficiency: int = Field(ge=1, le=10)
    feedback: str
    new_examples: list[Item]
    teacher: str
    prompt_sha256: str
    notes: str = ""
    quarantine: list[QuarantinedOutput] = Field(default_factory=list)
    usage: TeacherUsage | None = None


class JudgeRequest(BaseModel):
    """Two explanations of the same finding's severity; `reference` is a trusted one if known."""

    cycle: str
    item: Item
    explanation_a: str
    explanation_b: str
    reference: str | None = None


class JudgeVerdict(BaseModel):
    winner: Literal["A", "B", "tie"]
    reason: str
    teacher: str
    prompt_sha256: str
    scores: dict[str, float] = Field(default_factory=dict)
    usage: TeacherUsage | None = None
    valid: bool = True  # False: no usable verdict came back; the "tie" is not a judgement


class Teacher(dg.ConfigurableResource, ABC):
    """Writes exams and grades them; implemented offline (corpus) and by an LLM endpoint."""

    @property
    @abstractmethod
    def teacher_id(self) -> str:
        """Which teacher (and model) produced an output, for lineage."""

    @abstractmethod
    def write_exam(self, request: ExamRequest) -> ExamResult: ...

    @abstractmethod
    def evaluate_exam(self, request: EvaluationRequest) -> EvaluationResult: ...

    @abstractmethod
    def judge_once(self, request: JudgeRequest) -> JudgeVerdict:
        """One verdict, with explanation A shown first: "A", "B" or "tie" (may be biased by the
        order; use `judge_explanations` for a judgement)."""

    def judge_explanations(self, request: JudgeRequest) -> JudgeVerdict:
        """Which of two explanations of the same finding is better: "A", "B" or "tie". Asked
        in both orders; a verdict that flips with the order is a tie."""
        verdicts: list[JudgeVerdict] = []

        def once(first: str, second: str) -> tuple[str | None, str]:
            update = {"explanation_a": first, "explanation_b": second}
            verdict = self.judge_once(request.model_copy(update=update))
            verdicts.append(verdict)
            return (verdict.winner if verdict.valid else None), verdict.reason

        winner, reason = judge_both_orders(once, request.explanation_a, request.explanation_b)
        return JudgeVerdict(
            winner=winner or "tie",
            reason=reason,
            teacher=self.teacher_id,
            prompt_sha256=prompt_sha256("judge_explanations"),
            scores=verdicts[0].scores,
            valid=winner is not None,
        )


class CorpusTeacher(Teacher):
    """Offline teacher: exams and new examples drawn from the labelled data source by code.

    Exams are balanced across severities and tilted toward those the last evaluation found weak;
    proficiency comes from the exam's macro-F1; new examples are the pool items most similar to
    the questions the student got wrong, with more of them for weaker severities. The judge is
    a documented proxy (see `flywheel_assets.teaching.explanation_judge`), not a coin.
    """

    @property
    def teacher_id(self) -> str:
        return "corpus-teacher/1"

    def write_exam(self, request: ExamRequest) -> ExamResult:
        allocation = allocate(
            request.num_questions, request.previous_strengths, request.min_share_per_class
        )
        pool = [item.model_dump() for item in request.pool]
        questions = draw_questions(
            pool, allocation, salt=request.cycle, avoid_ids=request.avoid_ids
        )
        return ExamResult(
            questions=[Item.model_validate(q) for q in questions],
            allocation=allocation,
            teacher=self.teacher_id,
            prompt_sha256=prompt_sha256("exam_generation"),
        )

    def evaluate_exam(self, request: EvaluationRequest) -> EvaluationResult:
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
            teacher=self.teacher_id,
            prompt_sha256=prompt_sha256("exam_evaluation"),
            notes=f"examples per severity requested: {quotas}; reference explanations built "
            f"from the corpus's rule docs and good/bad code ({REFERENCE_SOURCE}), or the "
            "reviewer's own",
        )

    def judge_once(self, request: JudgeRequest) -> JudgeVerdict:
        verdict = judge_by_proxy(
            request.item.model_dump(),
            request.explanation_a,
            request.explanation_b,
            request.reference,
        )
        return JudgeVerdict(
            winner=verdict.winner,
            reason=verdict.reason,
            scores={"A": verdict.score_a, "B": verdict.score_b},
            teacher=self.teacher_id,
            prompt_sha256=prompt_sha256("judge_explanations"),
        )
