"""Protects the flywheel end to end: two cycles of the whole graph with a tiny student."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from flywheel_core.hashing import sha256_dir, sha256_file
from flywheel_core.settings import CurriculumSettings
from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.curriculum_weights import weigh
from flywheel_core.teaching.metrics import classification_report
from tests.conftest import TINY_OVERRIDES
from tests.support.flywheel_runner import latest_metadata, run_cycles

KEYS = ["bootstrap", "cycle-2"]


@pytest.fixture(scope="module")
def two_cycles(tmp_path_factory, cache_dir):
    home = tmp_path_factory.mktemp("flywheel-home")
    env = {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}
    defs, instance = run_cycles(home, env, KEYS, TINY_OVERRIDES)
    return home, defs.resources["store"], instance


def test_bootstrap_exam_is_balanced_and_uses_no_heldout_item(two_cycles):
    _, store, _ = two_cycles
    exam = store.query("SELECT * FROM exams WHERE cycle = 'bootstrap'")
    assert exam.height == 16
    assert {c: int((exam["severity"] == c).sum()) for c in SEVERITIES} == dict.fromkeys(
        SEVERITIES, 4
    )
    heldout = set(store.query("SELECT item_id FROM seed_corpus WHERE split = 'heldout'")["item_id"])
    used = store.query("SELECT item_id FROM exams UNION ALL SELECT item_id FROM curricula")
    assert not heldout & set(used["item_id"])


def test_one_valid_answer_per_question(two_cycles):
    _, store, _ = two_cycles
    for cycle in KEYS:
        exam = store.query("SELECT question_no FROM exams WHERE cycle = ?", [cycle])
        answers = store.query("SELECT * FROM answers WHERE cycle = ?", [cycle])
        assert sorted(answers["question_no"]) == sorted(exam["question_no"])
        assert set(answers["predicted"]) <= set(SEVERITIES)
        probs = answers.select(*(f"p_{c}" for c in SEVERITIES)).sum_horizontal()
        assert all(abs(p - 1.0) < 1e-4 for p in probs)


def test_accuracy_matches_a_recomputation_from_stored_answers(two_cycles):
    _, store, instance = two_cycles
    for cycle in KEYS:
        joined = store.query(
            "SELECT e.severity, a.predicted FROM exams e JOIN answers a "
            "USING (cycle, exam_id, question_no) WHERE e.cycle = ?",
            [cycle],
        )
        correct = int((joined["severity"] == joined["predicted"]).sum())
        stored = store.query("SELECT * FROM evaluations WHERE cycle = ?", [cycle]).row(
            0, named=True
        )
        assert stored["accuracy"] == pytest.approx(correct / joined.height)
        report = classification_report(joined["severity"].to_list(), joined["predicted"].to_list())
        assert json.loads(stored["confusion"]) == report["confusion"]
        assert 1 <= stored["proficiency"] <= 10
        metadata = latest_metadata(instance, "exam_evaluation", cycle)
        assert metadata["accuracy (%)"] == pytest.approx(100 * stored["accuracy"], abs=0.01)


def test_cycle_two_reads_cycle_one(two_cycles):
    _, _, instance = two_cycles
    exam_meta = latest_metadata(instance, "exam", "cycle-2")
    assert exam_meta["previous_evaluation_cycle"] == "bootstrap"
    assert exam_meta["previous_curriculum_cycle"] == "bootstrap"
    assert latest_metadata(instance, "exam", "bootstrap")["previous_evaluation_cycle"] == "none"


def test_curriculum_grows_and_weighs_the_weak_class_more(two_cycles):
    _, store, _ = two_cycles
    first = store.query("SELECT * FROM curricula WHERE cycle = 'bootstrap'")
    second = store.query("SELECT * FROM curricula WHERE cycle = 'cycle-2'")
    assert second.height > first.height
    assert set(first["item_id"]) <= set(second["item_id"])
    per_class = json.loads(
        store.query("SELECT per_class FROM evaluations WHERE cycle = 'cycle-2'")["per_class"][0]
    )
    f1 = {c: v["f1"] for c, v in per_class.items()}
    settings = CurriculumSettings()  # the defaults (the tiny overrides change only the size)
    rows = second.drop("weight").sort("item_id")
    # The stored weights are the rule's: weak-class boost x feedback weight x class balance.
    expected = weigh(
        rows, f1, settings.weak_class_boost, settings.feedback_weight, settings.class_balance
    )
    assert second.sort("item_id")["weight"].to_list() == pytest.approx(expected["weight"])
    # With the balance factored out, the weakest class on the exam weighs more.
    weakest, strongest = min(f1, key=f1.get), max(f1, key=f1.get)
    if f1[weakest] < f1[strongest]:
        boosted = weigh(rows, f1, settings.weak_class_boost, settings.feedback_weight, 0.0)
        mean = boosted.group_by("severity").agg(pl.col("weight").mean())
        weights = dict(zip(mean["severity"], mean["weight"], strict=True))
        assert weights[weakest] > weights[strongest]
    assert second["weight"].mean() == pytest.approx(1.0)


def test_adapters_are_stored_by_sha256_and_warm_started(two_cycles):
    _, store, instance = two_cycles
    adapters = {r["cycle"]: r for r in store.query("SELECT * FROM adapters").iter_rows(named=True)}
    for row in adapters.values():
        path = Path(row["uri"].removeprefix("file://"))
        assert (path / "adapter_model.safetensors").is_file()
        assert (path / "adapter_config.json").is_file()
        assert sha256_dir(path) == row["adapter_sha256"] == path.name
    assert adapters["bootstrap"]["init_adapter_sha256"] is None
    assert adapters["cycle-2"]["init_adapter_sha256"] == adapters["bootstrap"]["adapter_sha256"]
    meta = latest_metadata(instance, "lora_adapter", "cycle-2")
    assert meta["warm_start_from_cycle"] == "bootstrap"
    assert meta["steps"] == 6


def test_deployment_points_at_the_cycle_adapter(two_cycles):
    home, store, _ = two_cycles
    deployments = store.query("SELECT * FROM deployments ORDER BY model_version")
    adapters = store.query("SELECT cycle, adapter_sha256 FROM adapters")
    assert deployments["model_version"].to_list() == [1, 2]
    assert deployments.join(adapters, on=["cycle", "adapter_sha256"]).height == 2
    version_dir = home / "triton_repository" / "flywheel_student" / "2"
    deployment = json.loads((version_dir / "deployment.json").read_text())
    assert deployment["adapter_sha256"] == deployments["adapter_sha256"][1]
    assert sha256_file(version_dir / "adapter" / "adapter_model.safetensors")
    assert (home / "triton_repository" / "flywheel_student" / "config.pbtxt").is_file()


def test_cycle_two_answers_come_from_the_deployed_adapter(two_cycles):
    _, store, _ = two_cycles
    answered_by = store.query("SELECT DISTINCT adapter_sha256 FROM answers WHERE cycle = 'cycle-2'")
    deployed = store.query("SELECT adapter_sha256 FROM deployments WHERE cycle = 'bootstrap'")
    assert answered_by["adapter_sha256"].to_list() == deployed["adapter_sha256"].to_list()


def test_heldout_results_start_with_the_base_model(two_cycles):
    _, store, _ = two_cycles
    results = store.query("SELECT * FROM heldout_results ORDER BY cycle, role")
    incoming = results.filter((pl.col("cycle") == "bootstrap") & (pl.col("role") == "incoming"))
    assert incoming["model_ref"][0].startswith("base:")
    assert set(results["items"]) == {24}


def test_curriculum_carries_reference_explanations_into_training(two_cycles):
    _, store, instance = two_cycles
    curriculum = store.query("SELECT * FROM curricula WHERE cycle = 'bootstrap'")
    explained = curriculum.filter(pl.col("explanation").is_not_null())
    assert explained.height > 0
    assert set(explained["explanation_source"]) == {"corpus-template/1"}
    assert all(text.split(":")[0].lower() in SEVERITIES for text in explained["explanation"])
    meta = latest_metadata(instance, "curriculum", "bootstrap")
    assert meta["with_explanation"] == explained.height
    adapter = latest_metadata(instance, "lora_adapter", "bootstrap")
    assert adapter["explanation_examples"] == explained.height
    assert adapter["explanation_steps"] > 0


def test_explanation_preference_per_cycle(two_cycles):
    _, store, instance = two_cycles
    results = store.query("SELECT * FROM preference_results ORDER BY cycle, baseline")
    by_cycle = {c: set(results.filter(pl.col("cycle") == c)["baseline"]) for c in KEYS}
    assert by_cycle["bootstrap"] == {"base model"}  # nothing was deployed before it
    assert by_cycle["cycle-2"] == {"base model", "deployed (bootstrap)"}
    for row in results.iter_rows(named=True):
        assert row["wins"] + row["ties"] + row["losses"] == row["pairs"] == 8
        assert row["ci_low"] <= row["differential"] <= row["ci_high"]
        assert row["differential"] == pytest.approx((row["wins"] - row["losses"]) / 8, abs=1e-4)
    judged = store.query("SELECT * FROM explanation_judgements WHERE cycle = 'cycle-2'")
    assert judged.height == 16 and judged["item_id"].n_unique() == 8
    # the same held-out items every cycle, explained once per model
    items = store.query("SELECT DISTINCT item_id FROM explanation_judgements")
    assert items.height == 8
    written = store.query("SELECT model_ref, COUNT(*) AS n FROM explanations GROUP BY model_ref")
    assert set(written["n"]) == {8} and written.height == 3  # base + two adapters
    meta = latest_metadata(instance, "explanation_preference", "cycle-2")
    assert "new adapter vs base model" in meta["preference"]
    assert "new adapter vs deployed (bootstrap)" in meta["preference"]
    assert "reference (corpus template)" in meta["example_explanations"]
    assert meta["judge"] == "corpus-teacher/1"


def test_metadata_a_person_reads_at_a_glance(two_cycles):
    """Numbers are typed (the UI charts them over partitions), accuracies are percentages, the
    confusion matrix is a table, the loss curve a picture."""
    import dagster as dg

    _, store, instance = two_cycles

    def raw(asset: str, cycle: str) -> dict:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[cycle]), limit=1
        ).records
        return records[0].event_log_entry.asset_materialization.metadata

    exam = raw("exam_evaluation", "cycle-2")
    stored = store.evaluation("cycle-2")
    assert isinstance(exam["accuracy (%)"], dg.FloatMetadataValue)
    assert exam["accuracy (%)"].value == pytest.approx(100 * stored["accuracy"], abs=0.01)
    assert isinstance(exam["proficiency"], dg.IntMetadataValue)
    confusion = exam["confusion_matrix"]
    assert isinstance(confusion, dg.TableMetadataValue)
    assert [c.name for c in confusion.schema.columns][0] == "answer key"
    counts = sum(v for r in confusion.records for k, v in r.data.items() if k != "answer key")
    assert counts == 16  # one answer per exam question
    assert isinstance(exam["per_class"], dg.TableMetadataValue)

    heldout = raw("heldout_evaluation", "cycle-2")
    for key in ("candidate accuracy (%)", "incoming accuracy (%)", "majority-class accuracy (%)"):
        assert isinstance(heldout[key], dg.FloatMetadataValue) and 0 <= heldout[key].value <= 100
    assert isinstance(heldout["heldout_items"], dg.IntMetadataValue)
    assert isinstance(heldout["recall_per_severity"], dg.TableMetadataValue)

    adapter = raw("lora_adapter", "cycle-2")
    assert isinstance(adapter["loss_curve"], dg.MarkdownMetadataValue)
    assert adapter["loss_curve"].value.startswith("![loss per step](data:image/png;base64,")
    assert len(adapter["train_loss"].value) == 6

    deployed = raw("deployed_student", "cycle-2")
    assert isinstance(deployed["model_version"], dg.IntMetadataValue)
