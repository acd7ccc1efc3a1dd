"""The teacher interface, and the offline corpus teacher that implements it over real data.

Every call takes the run's `TeacherSettings`, so a per-run override of `teacher.*` reaches it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import dagster as dg

from flywheel_core.domain import (
    EvaluationRequest,
    EvaluationResult,
    ExamRequest,
    ExamResult,
    JudgeRequest,
    JudgeVerdict,
    QuarantinedOutput,
)
from flywheel_core.prompts import prompt_sha256
from flywheel_core.settings import TeacherSettings
from flywheel_core.teacher import corpus
from flywheel_core.teaching.preference import judge_both_orders


class TeacherFailure(dg.Failure):
    """The teacher produced nothing usable; carries what it quarantined, so the asset can still
    store those rows before failing (they say why)."""

    def __init__(self, description: str, quarantine: list[QuarantinedOutput]) -> None:
        super().__init__(description=description)
        self.quarantine = quarantine


class Teacher(dg.ConfigurableResource, ABC):
    """Writes exams and grades them; implemented offline (corpus) and by an LLM endpoint."""

    @property
    @abstractmethod
    def teacher_id(self) -> str:
        """Which teacher (and model) produced an output, for lineage."""

    @abstractmethod
    def write_exam(self, request: ExamRequest, settings: TeacherSettings) -> ExamResult: ...

    @abstractmethod
    def evaluate_exam(
        self, request: EvaluationRequest, settings: TeacherSettings
    ) -> EvaluationResult: ...

    @abstractmethod
    def judge_once(self, request: JudgeRequest, settings: TeacherSettings) -> JudgeVerdict:
        """One verdict, with explanation A shown first: "A", "B" or "tie" (may be biased by the
        order; use `judge_explanations` for a judgement)."""

    def concurrency(self, settings: TeacherSettings) -> int:
        """How many judge calls may run at once (an endpoint's limit; 1 for local code)."""
        return 1

    def judge_explanations(self, request: JudgeRequest, settings: TeacherSettings) -> JudgeVerdict:
        """Which of two explanations of the same finding is better: "A", "B" or "tie". Asked
        in both orders; a verdict that flips with the order is a tie."""
        verdicts: list[JudgeVerdict] = []

        def once(first: str, second: str) -> tuple[str | None, str]:
            update = {"explanation_a": first, "explanation_b": second}
            verdict = self.judge_once(request.model_copy(update=update), settings)
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
    """Offline teacher over the labelled data source (`flywheel_core.teacher.corpus`)."""

    @property
    def teacher_id(self) -> str:
        return corpus.TEACHER_ID

    def write_exam(self, request: ExamRequest, settings: TeacherSettings) -> ExamResult:
        return corpus.write_exam(request)

    def evaluate_exam(
        self, request: EvaluationRequest, settings: TeacherSettings
    ) -> EvaluationResult:
        return corpus.evaluate_exam(request)

    def judge_once(self, request: JudgeRequest, settings: TeacherSettings) -> JudgeVerdict:
        return corpus.judge_once(request)
