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


class Item(BaseModel):
    """A labelled finding: code, the reviewer's comment, and its severity."""

    item_id: str
    source: str
    code: str
    review: str
    severity: str


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
    def judge_explanations(self, request: JudgeRequest) -> JudgeVerdict:
        """Which of two explanations of the same finding is better: "A", "B" or "tie"."""


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
            new_examples=[Item.model_validate(e) for e in examples],
            teacher=self.teacher_id,
            prompt_sha256=prompt_sha256("exam_evaluation"),
            notes=f"examples per severity requested: {quotas}",
        )

    def judge_explanations(self, request: JudgeRequest) -> JudgeVerdict:
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
