"""Protects the flywheel with the LLM teacher (FLYWHEEL_ENV=prod) against a scripted endpoint."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from flywheel_assets.assets.step02_exam import exam
from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from resources.config import flywheel_config
from resources.lineage.store import LineageStore
from resources.teacher.llm import LLMTeacher
from tests.conftest import TINY_OVERRIDES
from tests.core.test_privacy import AWS_KEY, AWS_SECRET, SNIPPET
from tests.support.flywheel_runner import latest_metadata
from tests.support.openai_stub import call_kind

OVERRIDES = [
    *TINY_OVERRIDES,
    "exam.num_questions=8",
    "training.steps_per_cycle=2",
    "teacher.request_timeout_s=0.5",
    "teacher.backoff_base_s=0.01",
    "teacher.backoff_max_s=0.5",
    "teacher.questions_per_call=2",
    "teacher.examples_per_call=6",
]
SCRIPTS = {
    "damaged": {
        "exam": ["prose", "fenced", "truncated", "wrong_label"],
        "evaluation": ["proficiency_7_5", "truncated", "wrong_label", "single_quotes"],
    },
    "faults": {
        "exam": ["rate_limit", "server_error", "stall"],
        "evaluation": ["rate_limit", "stall"],
    },
    # Every kind of fault at once, at the default concurrency (4 calls in flight).
    "mixed": {
        "exam": ["rate_limit", "server_error", "stall", "garbage", "prose", "fenced", "truncated"],
        "evaluation": ["server_error", "garbage", "rate_limit", "fenced", "stall", "prose"],
    },
    # Nothing usable for the exam: the cycle fails there, and is run again.
    "garbage": {"exam": ["garbage"] * 4},
}


def run_cycle(defs, instance, key, succeed=True):
    if key not in instance.get_dynamic_partitions(cycles.name):
        instance.add_dynamic_partitions(cycles.name, [key])
    job = defs.resolve_job_def("flywheel_cycle")
    result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
    assert result.success is succeed, key
    return result


def exam_requests(endpoint) -> int:
    return sum(call_kind(p) == "exam" for p in endpoint.prompts())


@pytest.fixture(scope="module")
def prod_flywheel(tmp_path_factory, cache_dir, teacher_endpoint):
    home = tmp_path_factory.mktemp("prod-home")
    env = {"FLYWHEEL_ENV": "prod", "FLYWHEEL_CACHE": str(cache_dir), "OPENAI_MODEL": "stub"}
    requests = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_BASE_URL", teacher_endpoint.url)
        mp.setenv("OPENAI_API_KEY", "test-key")
        defs = build_definitions(env=env, home=home, overrides=OVERRIDES)
        instance = dg.DagsterInstance.ephemeral()
        assert defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance).success
        for key, script in SCRIPTS.items():
            teacher_endpoint.reset(script)
            run_cycle(defs, instance, key, succeed=key != "garbage")
            requests[key] = len(teacher_endpoint.requests)
        teacher_endpoint.reset()
        run_cycle(defs, instance, "garbage")  # the retry of the failed cycle
        requests["garbage_retry_exam"] = exam_requests(teacher_endpoint)
        teacher_endpoint.reset()
        run_cycle(defs, instance, "garbage")  # unchanged inputs: everything from the cache
        requests["rerun"] = len(teacher_endpoint.requests)
        requests["mixed_exam"] = latest_metadata(instance, "exam", "mixed")
        teacher_endpoint.reset()
        run_cycle(defs, instance, "mixed")  # only the calls with quarantined items again
        requests["mixed_rerun_exam"] = exam_requests(teacher_endpoint)
    return defs.resources["store"], instance, requests


def test_damaged_replies_keep_valid_items_and_quarantine_bad_ones(prod_flywheel):
    store, instance, _ = prod_flywheel
    quarantine = store.query("SELECT * FROM teacher_quarantine WHERE cycle = 'damaged'")
    reasons = dict(quarantine.group_by("asset").agg(pl.col("reason")).iter_rows())
    assert any("truncated" in r for r in reasons["exam"])
    assert any("blocker" in r for r in reasons["exam"])
    assert any("blocker" in r for r in reasons["exam_evaluation"])
    exam_rows = store.query("SELECT * FROM exams WHERE cycle = 'damaged'")
    assert exam_rows.height == 6  # 8 asked, 1 truncated away, 1 wrong label
    assert exam_rows["teacher"][0] == "llm-teacher/stub"
    evaluation = latest_metadata(instance, "exam_evaluation", "damaged")
    # "7.5" reads as 8 (never quarantined); which call's grade counts depends on the order the
    # four concurrent calls met the script (the others say 6).
    assert evaluation["proficiency"] in (6, 8)
    assert evaluation["teacher_quarantined"] == len(reasons["exam_evaluation"])
    assert latest_metadata(instance, "exam", "damaged")["teacher_repairs"]


def test_transport_faults_are_retried_counted_and_the_cycle_completes(prod_flywheel):
    store, instance, requests = prod_flywheel
    exam_meta = latest_metadata(instance, "exam", "faults")
    evaluation_meta = latest_metadata(instance, "exam_evaluation", "faults")
    assert (exam_meta["teacher_retries"], evaluation_meta["teacher_retries"]) == (3, 2)
    assert exam_meta["questions"] == 8 and exam_meta["teacher_failed_calls"] == 0
    calls = exam_meta["teacher_calls"] + evaluation_meta["teacher_calls"]
    assert requests["faults"] == calls + 3 + 2  # every retry reached the server once
    assert store.query("SELECT * FROM deployments WHERE cycle = 'faults'").height == 1


def test_ledger_and_metadata_show_tokens_and_cost(prod_flywheel):
    store, instance, _ = prod_flywheel
    ledger = store.query(
        "SELECT asset, sum(prompt_tokens) AS p, sum(cost_usd) AS usd FROM teacher_ledger "
        "WHERE cycle = 'faults' AND NOT cached GROUP BY asset"
    )
    per_asset = {r["asset"]: r for r in ledger.iter_rows(named=True)}
    meta = latest_metadata(instance, "exam_evaluation", "faults")
    assert meta["teacher_prompt_tokens"] == per_asset["exam_evaluation"]["p"] > 0
    total = sum(r["usd"] for r in per_asset.values())
    assert meta["cycle_teacher_cost_usd"] == pytest.approx(total, abs=1e-6)


def test_new_examples_are_stored_with_the_teachers_explanations(prod_flywheel):
    store, _, _ = prod_flywheel
    rows = store.query(
        "SELECT explanation, explanation_source FROM teacher_examples WHERE cycle = 'faults'"
    )
    by_teacher = rows.filter(pl.col("explanation_source") == "llm-teacher/stub")
    assert by_teacher.height > 0 and by_teacher["explanation"].str.len_chars().min() > 0


def test_rematerializing_with_unchanged_inputs_sends_no_request(prod_flywheel):
    _, instance, requests = prod_flywheel
    assert requests["rerun"] == 0
    for asset in ("exam", "exam_evaluation"):
        meta = latest_metadata(instance, asset, "garbage")
        assert meta["teacher_cache_misses"] == 0
        assert meta["teacher_cache_hits"] == meta["teacher_calls"] >= 4


def test_every_fault_at_default_concurrency_and_the_cycle_completes(prod_flywheel):
    store, _, requests = prod_flywheel
    exam_meta = requests["mixed_exam"]
    assert exam_meta["teacher_retries"] == 3 and exam_meta["questions"] == 5  # 8 - 2 - 1
    assert store.query("SELECT * FROM deployments WHERE cycle = 'mixed'").height == 1


def test_a_rerun_sends_again_only_the_calls_whose_replies_were_bad(prod_flywheel):
    store, instance, requests = prod_flywheel
    quarantine = store.query(
        "SELECT call_key FROM teacher_quarantine WHERE cycle = 'mixed' AND asset = 'exam'"
    )
    # The cycle that failed on garbage kept its quarantine rows; its retry sent its 4 exam calls.
    assert requests["garbage_retry_exam"] == 4
    failed = store.query(
        "SELECT outcome FROM teacher_ledger WHERE cycle = 'garbage' AND asset = 'exam'"
    )
    assert failed.height == 12  # 4 failed, 4 sent again, 4 from the cache on the last run
    assert latest_metadata(instance, "exam", "garbage")["questions"] == 8
    # Re-running the mixed cycle sent only the exam calls that had quarantined items (garbage,
    # truncated); their good replies now leave nothing in quarantine.
    assert requests["mixed_rerun_exam"] == 2 and quarantine.is_empty()


def test_a_failed_teacher_asset_keeps_its_quarantine_rows(tmp_path, teacher_endpoint, cache_dir):
    store = LineageStore(home=str(tmp_path))
    _seed(store)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cycles.name, ["c1"])
    teacher = LLMTeacher(base_url=teacher_endpoint.url, api_key="k", model="stub", store=store)
    config = flywheel_config(str(cache_dir), overrides=["exam.num_questions=4"])
    teacher_endpoint.reset({"exam": ["garbage"] * 4})
    result = dg.materialize(
        [exam],
        partition_key="c1",
        instance=instance,
        raise_on_error=False,
        resources={"store": store, "teacher": teacher, "flywheel_config": config},
    )
    assert not result.success
    rows = store.query("SELECT reason FROM teacher_quarantine WHERE cycle = 'c1'")
    assert rows.height == len(teacher_endpoint.requests) >= 1
    assert set(rows["reason"]) == {"no JSON document found in the reply"}


# -- privacy at the asset: redact / block -------------------------------------------------------
def _seed(store: LineageStore) -> None:
    rows = [
        {
            "item_id": f"{s}-{i}",
            "source": "seed",
            "code": f"run_{s}({i})",
            "review": f"{s} finding {i}",
            "severity": s,
            "split": "train",
        }
        for s in ("critical", "major", "minor", "trivial")
        for i in range(2)
    ]
    rows[0].update(code=SNIPPET, review="credentials are committed in the code")
    store.replace_rows("seed_corpus", pl.DataFrame(rows))
    store.register_cycle("c1")


def _materialize_exam(tmp_path, endpoint, cache_dir, policy):
    store = LineageStore(home=str(tmp_path))
    _seed(store)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cycles.name, ["c1"])
    teacher = LLMTeacher(base_url=endpoint.url, api_key="k", model="stub", store=store)
    config = flywheel_config(
        str(cache_dir),
        overrides=["exam.num_questions=4", f"teacher.privacy_policy={policy}"],
    )
    endpoint.reset()
    return dg.materialize(
        [exam],
        partition_key="c1",
        instance=instance,
        raise_on_error=False,
        resources={"store": store, "teacher": teacher, "flywheel_config": config},
    )


def test_secrets_reach_the_endpoint_redacted(tmp_path, teacher_endpoint, cache_dir):
    result = _materialize_exam(tmp_path, teacher_endpoint, cache_dir, "redact")
    assert result.success
    sent = "\n".join(teacher_endpoint.prompts())
    assert "credentials are committed" in sent  # the item was sent ...
    for secret in (AWS_KEY, AWS_SECRET, "MIIEpAIBAAKCAQEAu1SU1L", "hunter22"):
        assert secret not in sent  # ... without its secrets
    for placeholder in ("AWS_KEY_1", "AWS_SECRET_1", "PRIVATE_KEY_1", "PASSWORD_1"):
        assert f"<REDACTED_{placeholder}>" in sent
    metadata = result.asset_materializations_for_node("exam")[0].metadata
    assert metadata["teacher_redactions_total"].value >= 4


def test_block_policy_sends_nothing_and_says_why(tmp_path, teacher_endpoint, cache_dir):
    result = _materialize_exam(tmp_path, teacher_endpoint, cache_dir, "block")
    assert not result.success
    assert teacher_endpoint.requests == []
    (failure,) = result.get_step_failure_events()
    message = str(failure.step_failure_data.user_failure_data.description)
    assert "privacy policy 'block'" in message and "no request was sent" in message
