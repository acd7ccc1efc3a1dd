"""The flywheel's domain types: findings, exams, evaluations, judgements and teacher usage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from flywheel_core.teaching.reference_explanations import SOURCE as REFERENCE_SOURCE
from flywheel_core.teaching.reference_explanations import corpus_reference


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
