"""The teacher and judge behind any OpenAI-compatible endpoint (OpenAI, NIM, vLLM).

Work is split into calls (a few exam questions or training examples per severity each) that run
concurrently, come from the content-addressed cache when their prompt was seen before, stop when
the cycle's budget is spent, and are parsed item by item: a bad item is quarantined, never
trusted. Exact metrics stay with code; the model only picks items, writes feedback and a
proficiency. Secrets are redacted (or the call blocked) before any text leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import dagster as dg
import openai

from flywheel_core.domain import (
    EvaluationRequest,
    EvaluationResult,
    ExamRequest,
    ExamResult,
    JudgeRequest,
    JudgeVerdict,
    QuarantinedOutput,
    TeacherUsage,
)
from flywheel_core.privacy import Redactor
from flywheel_core.prompts import prompt_sha256
from flywheel_core.settings import TeacherSettings
from flywheel_core.teacher.items import (
    MAX_EXPLANATION_CHARS,
    Accepted,
    Rules,
    accept,
)
from flywheel_core.teacher.output import Parsed, parse_document, parse_proficiency
from flywheel_core.teacher.prompts import (
    EVALUATION_SCHEMA,
    EXAM_SCHEMA,
    JUDGE_SCHEMA,
    evaluation_prompt,
    exam_prompt,
    judge_prompt,
)
from flywheel_core.teaching.exam_design import allocate, draw_questions
from flywheel_core.teaching.example_selection import select_examples
from flywheel_core.teaching.metrics import proficiency as code_proficiency
from flywheel_core.teaching.metrics import written_feedback
from flywheel_core.teaching.preference import judge_both_orders
from resources.lineage.store import LineageStore
from resources.teacher.base import Teacher, TeacherFailure
from resources.teacher.calls import Batch, Budget, CallOutcome, PreparedCall, run_calls, settle
from resources.teacher.client import RetryPolicy, complete

DEFAULT_MODEL = "gpt-4o"


@dataclass(frozen=True)
class Chunk:
    call_key: str
    counts: dict[str, int]
    candidates: list[dict]
    swapped: bool = False  # judge only: explanations shown in the order B, A


def split_chunks(
    prefix: str, ranked: dict[str, list[dict]], counts: dict[str, int], per_call: int, factor: int
) -> list[Chunk]:
    """Calls of at most `per_call` items, filled severity by severity; every requested item
    brings its own `factor` candidates from that severity's ranked list."""
    chunks: list[Chunk] = []
    current: dict[str, int] = {}
    shown: list[dict] = []
    for severity, total in counts.items():
        offset = 0
        while offset < total:
            size = min(per_call - sum(current.values()), total - offset)
            current[severity] = size
            shown += ranked.get(severity, [])[offset * factor : (offset + size) * factor]
            offset += size
            if sum(current.values()) == per_call:
                chunks.append(Chunk(f"{prefix}/{len(chunks)}", current, shown))
                current, shown = {}, []
    if current:
        chunks.append(Chunk(f"{prefix}/{len(chunks)}", current, shown))
    return chunks


class LLMTeacher(Teacher):
    """Teacher and judge over an OpenAI-compatible chat-completions endpoint."""

    base_url: str
    api_key: str
    model: str = DEFAULT_MODEL
    store: LineageStore

    @property
    def teacher_id(self) -> str:
        return f"llm-teacher/{self.model}"

    def concurrency(self, settings: TeacherSettings) -> int:
        return settings.max_concurrency

    # -- the three tasks ---------------------------------------------------------------------
    def write_exam(self, request: ExamRequest, settings: TeacherSettings) -> ExamResult:
        allocation = allocate(
            request.num_questions, request.previous_strengths, request.min_share_per_class
        )
        pool = [item.model_dump() for item in request.pool]
        f = settings.candidates_per_item
        ranked = {
            s: draw_questions(pool, {s: n * f}, salt=request.cycle, avoid_ids=request.avoid_ids)
            for s, n in allocation.items()
        }
        chunks = split_chunks("exam", ranked, allocation, settings.questions_per_call, f)
        render = partial(self._exam_prompt, request.previous_proficiency, request.previous_feedback)
        usage = TeacherUsage()
        outcomes = self._call(request.cycle, "exam", chunks, render, EXAM_SCHEMA, usage, settings)
        rules = Rules(pool={item.item_id: item for item in request.pool})
        accepted, parsed = self._accept_all(chunks, outcomes, "questions", rules, usage)
        self._settle(chunks, outcomes, parsed, accepted)
        if not accepted.items:
            raise TeacherFailure(
                self._nothing("exam", outcomes, accepted, usage), accepted.quarantine
            )
        return ExamResult(
            questions=accepted.items,
            allocation=allocation,
            teacher=self.teacher_id,
            prompt_sha256=prompt_sha256("exam_generation"),
            quarantine=accepted.quarantine,
            usage=usage,
            notes=self._notes(accepted, usage, len(accepted.items), request.num_questions),
        )

    def evaluate_exam(
        self, request: EvaluationRequest, settings: TeacherSettings
    ) -> EvaluationResult:
        strengths = {c: v["f1"] for c, v in request.report["per_class"].items()}
        quotas = allocate(request.num_new_examples, strengths, request.min_share_per_class)
        graded = [q.model_dump() for q in request.graded]
        f = settings.candidates_per_item
        wide = {s: n * f for s, n in quotas.items()}
        picked = select_examples(
            graded,
            [i.model_dump() for i in request.pool],
            wide,
            request.exclude_ids,
            salt=request.cycle,
        )
        ranked = {s: [p for p in picked if p["severity"] == s] for s in quotas}
        chunks = split_chunks("evaluation", ranked, quotas, settings.examples_per_call, f)
        render = partial(self._evaluation_prompt, request.report, graded)
        usage = TeacherUsage()
        outcomes = self._call(
            request.cycle, "exam_evaluation", chunks, render, EVALUATION_SCHEMA, usage, settings
        )
        rules = Rules(
            pool={i.item_id: i for i in request.pool},
            excluded=frozenset(request.exclude_ids),
            explanation_source=self.teacher_id,
        )
        parsed = self._parse_all(outcomes, "dataset", usage)
        accepted = Accepted()
        used: set[str] = set()
        for chunk, reply in zip(chunks, parsed, strict=True):
            if reply is not None:
                accept(
                    reply,
                    "dataset",
                    sum(chunk.counts.values()),
                    rules,
                    used,
                    chunk.call_key,
                    accepted,
                )
        grade = _first_grade(chunks, parsed, accepted)
        self._settle(chunks, outcomes, parsed, accepted)
        if not accepted.items and grade is None:
            raise TeacherFailure(
                self._nothing("exam_evaluation", outcomes, accepted, usage), accepted.quarantine
            )
        notes = self._notes(accepted, usage, len(accepted.items), request.num_new_examples)
        if grade is None:
            notes += " Proficiency and feedback by code: the teacher gave no valid ones."
            grade = (code_proficiency(request.report), written_feedback(request.report))
        return EvaluationResult(
            proficiency=grade[0],
            feedback=grade[1],
            new_examples=accepted.items,
            teacher=self.teacher_id,
            prompt_sha256=prompt_sha256("exam_evaluation"),
            notes=notes,
            quarantine=accepted.quarantine,
            usage=usage,
        )

    def judge_explanations(self, request: JudgeRequest, settings: TeacherSettings) -> JudgeVerdict:
        """Asked twice, in both orders: a verdict that flips with the order is a tie."""
        chunks = [Chunk("judge/ab", {}, []), Chunk("judge/ba", {}, [], swapped=True)]
        usage = TeacherUsage()
        render = partial(self._judge_prompt, request)
        outcomes = self._call(request.cycle, "judge", chunks, render, JUDGE_SCHEMA, usage, settings)
        # Both calls ran concurrently; each reply is read in the order it was shown, and the
        # shared rule maps the swapped one back and combines them.
        verdicts = [_verdict(o, swapped=False) for o in outcomes]
        settle(self.store, self.model, outcomes, [v[0] is not None for v in verdicts])
        replies = iter(verdicts)
        return self._judge_verdict(*judge_both_orders(lambda a, b: next(replies), "A", "B"), usage)

    def judge_once(self, request: JudgeRequest, settings: TeacherSettings) -> JudgeVerdict:
        """One call, explanation A shown first."""
        usage = TeacherUsage()
        render = partial(self._judge_prompt, request)
        chunks = [Chunk("judge/ab", {}, [])]
        (outcome,) = self._call(
            request.cycle, "judge", chunks, render, JUDGE_SCHEMA, usage, settings
        )
        verdict = _verdict(outcome, swapped=False)
        settle(self.store, self.model, [outcome], [verdict[0] is not None])
        return self._judge_verdict(*verdict, usage)

    def _judge_verdict(self, winner: str | None, reason: str, usage: TeacherUsage) -> JudgeVerdict:
        """No valid verdict (None) reads as an invalid tie."""
        return JudgeVerdict(
            winner=winner or "tie",
            reason=reason,
            teacher=self.teacher_id,
            prompt_sha256=prompt_sha256("judge_explanations"),
            usage=usage,
            valid=winner is not None,
        )

    # -- prompts -------------------------------------------------------------------------------
    @staticmethod
    def _exam_prompt(prev_proficiency, prev_feedback, chunk: Chunk, redactor) -> str:
        return exam_prompt(
            chunk.counts, chunk.candidates, prev_proficiency, prev_feedback, redactor
        )

    @staticmethod
    def _evaluation_prompt(report: dict, graded: list[dict], chunk: Chunk, redactor) -> str:
        return evaluation_prompt(report, graded, chunk.counts, chunk.candidates, redactor)

    @staticmethod
    def _judge_prompt(request: JudgeRequest, chunk: Chunk, redactor) -> str:
        first, second = request.explanation_a, request.explanation_b
        if chunk.swapped:
            first, second = second, first
        return judge_prompt(request.item.model_dump(), first, second, request.reference, redactor)

    # -- plumbing ------------------------------------------------------------------------------
    def _call(
        self,
        cycle: str,
        asset: str,
        chunks: list[Chunk],
        render: Callable[..., str],
        schema: dict,
        usage: TeacherUsage,
        settings: TeacherSettings,
    ) -> list[CallOutcome]:
        calls = self._prepare(asset, chunks, render, schema, usage, settings.privacy_policy)
        return run_calls(self._batch(cycle, asset, settings), calls, usage)

    def _prepare(
        self,
        asset: str,
        chunks: list[Chunk],
        render: Callable[..., str],
        schema: dict,
        usage: TeacherUsage,
        privacy_policy: str,
    ) -> list[PreparedCall]:
        """Render every prompt (redacted per policy) before anything is sent."""
        calls, blocked = [], []
        for chunk in chunks:
            redactor = None if privacy_policy == "off" else Redactor()
            prompt = render(chunk, redactor)
            for kind, n in (redactor.counts if redactor else {}).items():
                usage.redactions[kind] = usage.redactions.get(kind, 0) + n
                blocked.append(f"{chunk.call_key}: {n} {kind}")
            redactions = redactor.total if redactor else 0
            calls.append(PreparedCall(chunk.call_key, prompt, schema, redactions))
        if blocked and privacy_policy == "block":
            raise dg.Failure(
                f"privacy policy 'block': secrets found in the data for {asset} "
                f"({'; '.join(blocked)}); no request was sent to {self.base_url}. Remove the "
                "secrets from the data or set teacher.privacy_policy=redact."
            )
        return calls

    def _batch(self, cycle: str, asset: str, settings: TeacherSettings) -> Batch:
        client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            max_retries=0,
            timeout=settings.request_timeout_s,
        )
        policy = RetryPolicy(settings.max_retries, settings.backoff_base_s, settings.backoff_max_s)
        params = {
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "structured_output": settings.structured_output,
        }

        def send(call: PreparedCall):
            request = {
                "model": self.model,
                "messages": [{"role": "user", "content": call.prompt}],
                "temperature": settings.temperature,
                "max_tokens": settings.max_tokens,
                "timeout": settings.request_timeout_s,
            }
            return complete(
                client, request, call.schema if settings.structured_output else None, policy
            )

        budget = Budget(
            settings.budget_usd_per_cycle,
            settings.budget_tokens_per_cycle,
            settings.prices.input_per_1m,
            settings.prices.output_per_1m,
        )
        return Batch(
            self.store, cycle, asset, self.model, params, budget, settings.max_concurrency, send
        )

    def _parse_all(
        self, outcomes: list[CallOutcome], list_key: str, usage: TeacherUsage
    ) -> list[Parsed | None]:
        parsed = []
        for outcome in outcomes:
            reply = parse_document(outcome.text, list_key) if outcome.text is not None else None
            for repair in reply.repairs if reply else []:
                usage.repairs[repair] = usage.repairs.get(repair, 0) + 1
            parsed.append(reply)
        return parsed

    def _accept_all(
        self,
        chunks: list[Chunk],
        outcomes: list[CallOutcome],
        list_key: str,
        rules: Rules,
        usage: TeacherUsage,
    ) -> tuple[Accepted, list[Parsed | None]]:
        accepted, used = Accepted(), set()
        parsed = self._parse_all(outcomes, list_key, usage)
        for chunk, reply in zip(chunks, parsed, strict=True):
            if reply is not None:
                limit = sum(chunk.counts.values())
                accept(reply, list_key, limit, rules, used, chunk.call_key, accepted)
        return accepted, parsed

    def _settle(
        self,
        chunks: list[Chunk],
        outcomes: list[CallOutcome],
        parsed: list[Parsed | None],
        accepted: Accepted,
    ) -> None:
        """Cache a reply only when it parsed and none of it was quarantined."""
        bad = {q.call_key for q in accepted.quarantine}
        usable = [
            reply is not None and reply.document is not None and chunk.call_key not in bad
            for chunk, reply in zip(chunks, parsed, strict=True)
        ]
        settle(self.store, self.model, outcomes, usable)

    @staticmethod
    def _notes(accepted: Accepted, usage: TeacherUsage, got: int, wanted: int) -> str:
        parts = [f"{got} of {wanted} items accepted, {len(accepted.quarantine)} quarantined."]
        if accepted.label_overrides:
            parts.append(
                f"{accepted.label_overrides} answer keys taken from the data, "
                "where the teacher gave another severity."
            )
        if accepted.explanations_missing:
            parts.append(
                f"{accepted.explanations_missing} examples kept without a reference "
                "explanation (the teacher gave none)."
            )
        if accepted.explanations_truncated:
            parts.append(
                f"{accepted.explanations_truncated} explanations cut to "
                f"{MAX_EXPLANATION_CHARS} characters."
            )
        if usage.failed_calls:
            parts.append(f"{usage.failed_calls} call(s) failed after retries.")
        if usage.budget_stop:
            parts.append(f"Teacher stopped: {usage.budget_stop}.")
        return " ".join(parts)

    def _nothing(
        self, asset: str, outcomes: list[CallOutcome], accepted: Accepted, usage: TeacherUsage
    ) -> str:
        errors = sorted({o.error for o in outcomes if o.error})
        reasons = sorted({q.reason for q in accepted.quarantine})[:5]
        return (
            f"the teacher ({self.teacher_id} at {self.base_url}) produced nothing usable for "
            f"{asset}: {len(outcomes)} call(s), errors: {errors or 'none'}; "
            f"quarantined: {len(accepted.quarantine)} ({reasons}); "
            f"budget: {usage.budget_stop or 'not reached'}"
        )


def _first_grade(
    chunks: list[Chunk], parsed: list[Parsed | None], accepted: Accepted
) -> tuple[int, str] | None:
    """Proficiency and feedback from the first reply that has valid ones; bad ones quarantined."""
    grade = None
    for chunk, reply in zip(chunks, parsed, strict=True):
        document = reply.document if reply else None
        if document is None:
            continue
        try:
            value = parse_proficiency(document.get("proficiency"))
        except ValueError as exc:
            accepted.quarantine.append(
                QuarantinedOutput(
                    call_key=chunk.call_key,
                    item_index=-1,
                    raw=repr(document.get("proficiency"))[:200],
                    reason=f"proficiency: {exc}",
                )
            )
            continue
        feedback = document.get("feedback")
        if not isinstance(feedback, str) or not feedback.strip():
            accepted.quarantine.append(
                QuarantinedOutput(
                    call_key=chunk.call_key,
                    item_index=-1,
                    raw=repr(feedback)[:200],
                    reason="feedback: missing or not text",
                )
            )
            continue
        grade = grade or (value, feedback.strip())
    return grade


def _verdict(outcome: CallOutcome, swapped: bool) -> tuple[str | None, str]:
    """(winner in the caller's A/B order or None, reason) from one judge reply."""
    if outcome.text is None:
        return None, outcome.error or "no reply"
    document = parse_document(outcome.text, "winner").document or {}
    raw = str(document.get("winner", "")).strip().lower()
    winner = {"a": "A", "b": "B", "tie": "tie"}.get(raw)
    if winner is None:
        return None, f"winner {document.get('winner')!r} is not A, B or tie"
    if swapped and winner != "tie":
        winner = "B" if winner == "A" else "A"
    return winner, str(document.get("reason", "")).strip() or "no reason given"
