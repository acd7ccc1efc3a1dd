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

OVERRIDES = [
    *TINY_OVERRIDES,
    "exam.num_questions=8",
    "training.steps_per_cycle=2",
    "teacher.request_timeout_s=0.5",
    "teacher.backoff_base_s=0.01",
    "teacher.backoff_max_s=0.5",
    "teacher.max_concurrency=1",
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
}


def run_cycle(defs, instance, key):
    instance.add_dynamic_partitions(cycles.name, [key])
    job = defs.resolve_job_def("flywheel_cycle")
    assert job.execute_in_process(partition_key=key, instance=instance).success, key


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
            run_cycle(defs, instance, key)
            requests[key] = len(teacher_endpoint.requests)
        teacher_endpoint.reset()
        run_cycle(defs, instance, "damaged")  # unchanged inputs: everything from the cache
        requests["rerun"] = len(teacher_endpoint.requests)
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
    assert evaluation["proficiency"] == 8  # "7.5", rounded half up
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
        meta = latest_metadata(instance, asset, "damaged")
        assert meta["teacher_cache_misses"] == 0
        assert meta["teacher_cache_hits"] == meta["teacher_calls"] >= 4


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
