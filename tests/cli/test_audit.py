"""Protects the lineage audit: the chain of cycle 2's adapter, and a batch's influence."""

from __future__ import annotations

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_assets.sensors import feedback_sensor
from flywheel_cli.main import main
from tests.conftest import TINY_OVERRIDES
from tests.support.feedback_files import drop, feedback_jsonl
from tests.support.flywheel_runner import run_cycles


@pytest.fixture(scope="module")
def audited(tmp_path_factory, cache_dir):
    home = tmp_path_factory.mktemp("audit-home")
    env = {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}
    drop(home / "feedback", "week-2.jsonl", feedback_jsonl("audit"))
    defs = build_definitions(env=env, home=home, overrides=TINY_OVERRIDES)
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        (request,) = feedback_sensor(context).run_requests
    key = request.partition_key
    defs, instance = run_cycles(home, env, ["bootstrap", key], TINY_OVERRIDES, instance)
    return home, defs.resources["store"], instance, key


def test_adapter_lineage_view_has_the_whole_chain(audited):
    _, store, _, key = audited
    adapter = store.find_adapter(key)
    assert [b["cycle"] for b in adapter["feedback_batches"]] == ["bootstrap", key]
    batch = adapter["feedback_batches"][1]
    assert (batch["file"], batch["received"], batch["accepted"]) == ("week-2.jsonl", 4, 4)
    assert adapter["feedback_rows"] == 4
    assert len(adapter["exam_ids"]) == 2 and adapter["exam_questions"] == 16
    assert adapter["model_version"] == 2 and adapter["init_adapter_sha256"]
    assert adapter["teacher"] and len(adapter["exam_prompt_sha256"]) >= 12
    assert store.find_adapter("v2") == adapter
    assert store.find_adapter(adapter["adapter_sha256"][:10]) == adapter


def test_audit_cli_prints_the_chain_of_cycle_two(audited, capsys):
    home, store, _, key = audited
    sha = store.query("SELECT adapter_sha256 FROM adapters WHERE cycle = ?", [key]).item()
    assert main(["audit", sha[:8], "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert f"Lineage of adapter {sha[:12]}" in out
    assert "week-2.jsonl" in out and "bootstrap" in out and "flywheel_student v2" in out
    assert "explain_severity" in out and "severity_rating" in out  # training prompts
    assert "corpus-template/1:" in out  # who wrote the reference explanations
    assert main(["audit", "nope", "--home", str(home)]) == 1


def test_reverse_query_names_the_adapters_a_batch_influenced(audited, capsys):
    home, store, _, key = audited
    influenced = store.feedback_influence("week-2.jsonl")
    assert influenced["adapter_cycle"].to_list() == [key]
    assert influenced["deployed"].to_list() == [True]
    assert store.feedback_influence("bootstrap")["adapter_cycle"].to_list() == ["bootstrap", key]
    assert main(["audit", "--feedback", key, "--home", str(home)]) == 0
    assert "flywheel_student" in capsys.readouterr().out


def test_audit_asset_renders_the_deployed_adapter(audited):
    home, store, instance, key = audited
    defs = build_definitions(env={}, home=home, overrides=TINY_OVERRIDES)
    assert dg.materialize(
        [defs.get_assets_def("lineage_audit")], instance=instance, resources={"store": store}
    ).success
    record = instance.get_latest_materialization_event(dg.AssetKey("lineage_audit"))
    report = record.asset_materialization.metadata["report"].value
    assert report == store.audit_report(store.find_adapter(key))
