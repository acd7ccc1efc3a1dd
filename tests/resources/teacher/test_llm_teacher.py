"""Protects the LLM teacher against a real openai client on loopback: faults, cache, budget."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from flywheel_core.domain import EvaluationRequest, ExamRequest, GradedQuestion, Item, JudgeRequest
from flywheel_core.settings import TeacherSettings
from flywheel_core.severity import SEVERITIES
from flywheel_core.teacher.items import MAX_EXPLANATION_CHARS
from flywheel_core.teaching.metrics import classification_report
from resources.lineage.store import LineageStore
from resources.teacher.base import CorpusTeacher, TeacherFailure
from resources.teacher.ledger import cache_entries, clear_cache
from resources.teacher.llm import LLMTeacher
from tests.support.openai_stub import stub_explanation

POOL = [
    Item(
        item_id=f"{s}-{i}",
        source="seed",
        code=f"value_{i} = compute_{s}({i})",
        review=f"this {s} finding number {i}",
        severity=s,
    )
    for s in SEVERITIES
    for i in range(6)
]


class BoundTeacher:
    """An LLM teacher with the run's settings applied, as an asset calls it."""

    def __init__(self, teacher: LLMTeacher, settings: TeacherSettings) -> None:
        self.teacher, self.settings = teacher, settings

    def write_exam(self, request):
        return self.teacher.write_exam(request, self.settings)

    def evaluate_exam(self, request):
        return self.teacher.evaluate_exam(request, self.settings)

    def judge_explanations(self, request):
        return self.teacher.judge_explanations(request, self.settings)


def make_teacher(endpoint, tmp_path, **overrides) -> BoundTeacher:
    """The teacher on the stub endpoint, with fast timeouts; `overrides` are teacher settings."""
    settings = dict(
        request_timeout_s=0.5,
        backoff_base_s=0.01,
        backoff_max_s=0.5,
        questions_per_call=2,
        examples_per_call=2,
        prices={"input_per_1m": 2.5, "output_per_1m": 10.0},
    )
    teacher = LLMTeacher(
        base_url=endpoint.url,
        api_key="test-key",
        model="stub-model",
        store=LineageStore(home=str(tmp_path)),
    )
    return BoundTeacher(teacher, TeacherSettings.model_validate({**settings, **overrides}))


def exam_request(cycle="c1", n=8, pool=POOL) -> ExamRequest:
    return ExamRequest(cycle=cycle, num_questions=n, min_share_per_class=0.15, pool=pool)


def test_transport_faults_are_retried_and_counted(teacher_endpoint, tmp_path):
    teacher_endpoint.reset({"exam": ["rate_limit", "server_error", "stall"]})
    start = time.monotonic()
    result = make_teacher(teacher_endpoint, tmp_path).write_exam(exam_request())
    assert len(result.questions) == 8
    assert result.usage.retries == 3 and result.usage.failed_calls == 0
    assert len(teacher_endpoint.requests) == 4 + 3
    assert time.monotonic() - start >= 0.1  # Retry-After of the 429 was honoured
    ledger = LineageStore(home=str(tmp_path)).query("SELECT sum(retries) AS r FROM teacher_ledger")
    assert ledger["r"][0] == 3


def test_a_call_that_keeps_failing_leaves_a_partial_exam(teacher_endpoint, tmp_path):
    teacher_endpoint.reset({"exam": ["server_error"] * 3})
    result = make_teacher(teacher_endpoint, tmp_path, max_retries=2, max_concurrency=1)
    result = result.write_exam(exam_request())
    assert len(result.questions) == 6
    assert result.usage.failed_calls == 1 and "failed after retries" in result.notes


def test_damaged_replies_keep_valid_items_and_quarantine_the_rest(teacher_endpoint, tmp_path):
    teacher_endpoint.reset({"exam": ["prose", "fenced", "truncated", "wrong_label"]})
    result = make_teacher(teacher_endpoint, tmp_path, max_concurrency=1).write_exam(exam_request())
    reasons = [q.reason for q in result.quarantine]
    assert len(result.questions) == 6 and len(reasons) == 2
    assert any("truncated" in r for r in reasons) and any("blocker" in r for r in reasons)
    pool = {item.item_id: item for item in POOL}
    assert all(q == pool[q.item_id] for q in result.questions)  # answer keys from the data


def test_structured_output_falls_back_to_parsing_when_rejected(teacher_endpoint, tmp_path):
    teacher_endpoint.reset()
    teacher_endpoint.reject_schema = True
    try:
        result = make_teacher(teacher_endpoint, tmp_path).write_exam(exam_request())
    finally:
        teacher_endpoint.reject_schema = False
    assert len(result.questions) == 8 and result.usage.output_modes == {"prompt": 4}


def test_unchanged_inputs_make_no_second_request(teacher_endpoint, tmp_path):
    teacher = make_teacher(teacher_endpoint, tmp_path)
    teacher_endpoint.reset()
    first = teacher.write_exam(exam_request())
    teacher_endpoint.reset()
    second = teacher.write_exam(exam_request())
    assert teacher_endpoint.requests == []
    assert second.questions == first.questions
    assert (second.usage.cache_hits, second.usage.cache_misses, second.usage.cost_usd) == (4, 0, 0)
    assert first.usage.cost_usd > 0


def test_only_usable_replies_are_cached_and_a_rerun_resends_the_others(teacher_endpoint, tmp_path):
    teacher = make_teacher(teacher_endpoint, tmp_path)  # default concurrency (4)
    teacher_endpoint.reset({"exam": ["garbage", "prose", "truncated", "wrong_label"]})
    first = teacher.write_exam(exam_request())
    assert len(first.questions) == 4  # 2 calls lost: garbage; truncated + wrong label cost 1 each
    bad_calls = {q.call_key for q in first.quarantine}
    assert len(bad_calls) == 3
    store = LineageStore(home=str(tmp_path))
    assert cache_entries(store).height == 1  # only the prose reply parsed without quarantine
    teacher_endpoint.reset()
    second = teacher.write_exam(exam_request())
    assert len(teacher_endpoint.requests) == 3  # only the calls that failed are sent again
    assert len(second.questions) == 8 and second.quarantine == []
    assert (second.usage.cache_hits, second.usage.cache_misses) == (1, 3)
    teacher_endpoint.reset()
    teacher.write_exam(exam_request())
    assert teacher_endpoint.requests == []


def test_a_teacher_that_produced_nothing_fails_with_its_quarantine(teacher_endpoint, tmp_path):
    teacher = make_teacher(teacher_endpoint, tmp_path)
    teacher_endpoint.reset({"exam": ["garbage"] * 4})
    with pytest.raises(TeacherFailure, match="produced nothing usable") as failed:
        teacher.write_exam(exam_request())
    assert len(failed.value.quarantine) == 4
    assert {q.reason for q in failed.value.quarantine} == {"no JSON document found in the reply"}
    store = LineageStore(home=str(tmp_path))
    assert cache_entries(store).is_empty()  # the retry is not answered by the garbage
    teacher_endpoint.reset()
    assert len(teacher.write_exam(exam_request()).questions) == 8
    assert len(teacher_endpoint.requests) == 4


def test_cache_entries_are_listed_and_cleared_by_cycle_and_asset(teacher_endpoint, tmp_path):
    teacher = make_teacher(teacher_endpoint, tmp_path)
    teacher_endpoint.reset()
    teacher.write_exam(exam_request("c1"))
    teacher.write_exam(exam_request("c2").model_copy(update={"previous_proficiency": 4}))
    store = LineageStore(home=str(tmp_path))
    listed = cache_entries(store, cycle="c1")
    assert listed.height == 4 and set(listed["cycles"]) == {"c1"}
    assert set(listed["assets"]) == {"exam"}
    assert cache_entries(store, asset="exam").height == 8
    assert cache_entries(store, cycle="c1", asset="judge").is_empty()
    assert clear_cache(store, cycle="c1") == 4
    assert cache_entries(store).height == 4
    teacher_endpoint.reset()
    teacher.write_exam(exam_request("c1"))
    assert len(teacher_endpoint.requests) == 4  # cleared entries are asked for again


def test_flywheel_cache_command_lists_and_clears(teacher_endpoint, tmp_path, capsys):
    from flywheel_cli.main import main

    teacher_endpoint.reset()
    make_teacher(teacher_endpoint, tmp_path).write_exam(exam_request("c1"))
    home = ["--home", str(tmp_path)]
    assert main(["cache", "list", "--cycle", "c1", *home]) == 0
    assert "4 cached replies" in capsys.readouterr().out
    assert main(["cache", "clear", *home]) == 2  # clearing everything needs --all
    assert "--all" in capsys.readouterr().out
    assert main(["cache", "clear", "--asset", "exam", *home]) == 0
    assert "removed 4 cached replies" in capsys.readouterr().out
    assert main(["cache", "list", "--home", str(tmp_path / "typo")]) == 2
    assert not (tmp_path / "typo").exists()


def test_the_ledger_records_redactions_per_call(teacher_endpoint, tmp_path):
    secret = "ghp_" + "a1B2c3D4e5" * 4
    pool = [
        i.model_copy(update={"code": f'token = "{secret}"\n' + i.code})
        if i.item_id == "major-0"
        else i
        for i in POOL
    ]
    teacher_endpoint.reset()
    make_teacher(teacher_endpoint, tmp_path).write_exam(exam_request(pool=pool))
    assert secret not in "\n".join(teacher_endpoint.prompts())
    ledger = LineageStore(home=str(tmp_path)).query(
        "SELECT call_key, redactions FROM teacher_ledger ORDER BY call_key"
    )
    by_call = dict(ledger.iter_rows())
    assert sum(by_call.values()) == 1 and len(by_call) == 4


def test_budget_stops_the_teacher_cleanly_with_a_partial_exam(teacher_endpoint, tmp_path):
    teacher_endpoint.reset()
    teacher = make_teacher(teacher_endpoint, tmp_path, budget_tokens_per_cycle=1, max_concurrency=1)
    result = teacher.write_exam(exam_request())
    assert len(result.questions) == 2 and len(teacher_endpoint.requests) == 1
    assert "budget of 1 tokens reached" in result.usage.budget_stop
    assert result.usage.skipped_calls == 3 and "Teacher stopped" in result.notes
    with pytest.raises(dg.Failure, match="produced nothing usable"):
        changed = exam_request().model_copy(update={"previous_proficiency": 5})
        teacher.write_exam(changed)  # new prompts (no cache hit), budget already spent


def evaluation_request(pool=POOL) -> EvaluationRequest:
    graded = [GradedQuestion(**pool[i].model_dump(), predicted="minor") for i in (0, 6, 12, 18)]
    report = classification_report([q.severity for q in graded], [q.predicted for q in graded])
    return EvaluationRequest(
        cycle="c1",
        graded=graded,
        report=report,
        pool=pool,
        num_new_examples=4,
        exclude_ids=[q.item_id for q in graded],
        min_share_per_class=0.15,
    )


def test_evaluation_reads_seven_and_a_half_as_eight(teacher_endpoint, tmp_path):
    teacher_endpoint.reset({"evaluation": ["proficiency_7_5", "proficiency_7_5"]})
    request = evaluation_request()
    result = make_teacher(teacher_endpoint, tmp_path).evaluate_exam(request)
    assert result.proficiency == 8
    assert len(result.new_examples) == 4
    assert not {e.item_id for e in result.new_examples} & set(request.exclude_ids)


def test_new_examples_carry_the_teachers_explanations_but_keep_a_reviewers(
    teacher_endpoint, tmp_path
):
    teacher_endpoint.reset()
    reviewed = {"explanation": "Minor, says the reviewer.", "explanation_source": "reviewer"}
    pool = [i.model_copy(update=reviewed) if i.severity == "minor" else i for i in POOL]
    result = make_teacher(teacher_endpoint, tmp_path).evaluate_exam(evaluation_request(pool))
    by_teacher = [e for e in result.new_examples if e.severity != "minor"]
    by_reviewer = [e for e in result.new_examples if e.severity == "minor"]
    assert len(by_teacher) == 3 and len(by_reviewer) == 1
    assert all(e.explanation == stub_explanation(e.model_dump()) for e in by_teacher)
    assert {e.explanation_source for e in by_teacher} == {"llm-teacher/stub-model"}
    assert by_reviewer[0].model_dump(include={"explanation", "explanation_source"}) == reviewed
    schema = teacher_endpoint.requests[0]["response_format"]["json_schema"]["schema"]
    assert "explanation" in schema["properties"]["dataset"]["items"]["required"]


def test_a_missing_or_overlong_explanation_keeps_the_example(teacher_endpoint, tmp_path):
    teacher_endpoint.reset({"evaluation": ["no_explanation", "long_explanation"]})
    teacher = make_teacher(teacher_endpoint, tmp_path, max_concurrency=1)
    result = teacher.evaluate_exam(evaluation_request())
    assert len(result.new_examples) == 4 and result.quarantine == []
    first, second, third, fourth = result.new_examples
    assert first.explanation is None and second.explanation is None
    assert first.explanation_source is None and second.explanation_source is None
    assert len(third.explanation) <= MAX_EXPLANATION_CHARS and third.explanation.endswith(".")
    assert fourth.explanation == stub_explanation(fourth.model_dump())
    assert "2 examples kept without a reference explanation" in result.notes
    assert f"1 explanations cut to {MAX_EXPLANATION_CHARS} characters" in result.notes


def test_judge_picks_a_side_on_both_teachers(teacher_endpoint, tmp_path):
    teacher_endpoint.reset()
    item = Item(
        item_id="x",
        source="s",
        code="x = eval(input())",
        review="eval on user input",
        severity="critical",
    )
    request = JudgeRequest(
        cycle="c1",
        item=item,
        explanation_a="Critical: eval on user input lets an attacker run arbitrary code.",
        explanation_b="minor style nit",
        reference="Running user input with eval is critical.",
    )
    teacher = make_teacher(teacher_endpoint, tmp_path)
    verdict = teacher.judge_explanations(request)
    assert verdict.winner == "A" and verdict.valid and verdict.usage.calls == 2  # both orders
    offline = CorpusTeacher().judge_explanations(request, TeacherSettings())
    assert offline.winner == "A" and offline.scores["A"] > offline.scores["B"]
    swapped = request.model_copy(
        update={"explanation_a": request.explanation_b, "explanation_b": request.explanation_a}
    )
    assert CorpusTeacher().judge_explanations(swapped, TeacherSettings()).winner == "B"


def test_a_judge_verdict_that_follows_the_order_is_a_tie(teacher_endpoint, tmp_path):
    teacher_endpoint.reset({"judge": ["always_a", "always_a"]})
    item = Item(item_id="y", source="s", code="print( x )", review="spacing", severity="trivial")
    request = JudgeRequest(
        cycle="c1",
        item=item,
        explanation_a="Trivial: only spacing.",
        explanation_b="Formatting only, trivial, no behaviour changes.",
    )
    verdict = make_teacher(teacher_endpoint, tmp_path).judge_explanations(request)
    assert verdict.winner == "tie" and "position bias" in verdict.reason
