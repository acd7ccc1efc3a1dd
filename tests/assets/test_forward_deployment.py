"""Protects forward-only deployment: a backfill of an old cycle, with the automation sensor on,
re-evaluates it but never rolls serving back, and the deployment history keeps every row."""

from __future__ import annotations

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_cli import runner
from tests.conftest import TINY_OVERRIDES
from tests.support.flywheel_runner import latest_metadata

KEYS = ["bootstrap", "cycle-2"]


def automation_tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor) -> tuple:
    """One evaluation of the automation sensor's conditions: {asset: partitions requested}."""
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = {
        e.key.to_user_string(): set(result.get_requested_partitions(e.key))
        for e in result.results
        if isinstance(e.key, dg.AssetKey) and result.get_num_requested(e.key)
    }
    return requested, result.cursor


def backfill(defs: dg.Definitions, instance: dg.DagsterInstance, key: str, assets: list[str]):
    """A backfill run of some assets of one old cycle (what the UI's backfill launches)."""
    return defs.resolve_job_def("flywheel_cycle").execute_in_process(
        partition_key=key,
        instance=instance,
        asset_selection=[dg.AssetKey(a) for a in assets],
        tags={"dagster/backfill": "test-backfill"},
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, cache_dir):
    home = tmp_path_factory.mktemp("forward-home")
    env = {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}
    defs = build_definitions(env=env, home=home, overrides=TINY_OVERRIDES)
    instance = dg.DagsterInstance.ephemeral()
    runner.run_cycles(defs, instance, KEYS)
    return defs, instance, defs.resources["store"]


def test_backfilling_an_old_cycle_keeps_the_newest_deployment_serving(wheel):
    defs, instance, store = wheel
    repository = defs.resources["model_repository"]
    history = store.deployment_history()
    assert history["model_version"].to_list() == [1, 2]
    assert store.serving_now()["deployed_in"] == "cycle-2"
    _, cursor = automation_tick(defs, instance, None)  # the sensor's first tick: a baseline

    # 1. Backfill heldout_evaluation of the old cycle: automation must not request its deploy.
    assert backfill(defs, instance, "bootstrap", ["heldout_evaluation"]).success
    requested, cursor = automation_tick(defs, instance, cursor)
    assert "bootstrap" not in requested.get("deployed_student", set())
    assert "cycle-2" not in requested.get("deployed_student", set())
    # the gate compared the old candidate with the model serving now (cycle-2's adapter)
    roles = store.heldout_reports("bootstrap")
    assert set(roles) == {"incoming", "candidate", "serving"}
    assert roles["serving"]["model_ref"] == f"adapter:{store.serving_now()['adapter_sha256']}"

    # 2. Backfill heldout_evaluation and deployed_student of the old cycle explicitly.
    assert backfill(defs, instance, "bootstrap", ["heldout_evaluation", "deployed_student"]).success
    meta = latest_metadata(instance, "deployed_student", "bootstrap")
    assert meta["deployed"] is False
    assert meta["reason"].startswith("not deployed: a newer cycle serves (cycle-2, v2")
    requested, cursor = automation_tick(defs, instance, cursor)
    assert "bootstrap" not in requested.get("deployed_student", set())

    # Serving is still the newest cycle; the history kept every row and gained none.
    now = store.serving_now()
    assert (now["deployed_in"], now["model_version"]) == ("cycle-2", 2)
    assert repository.pinned_version() == 2
    after = store.deployment_history()
    assert after.to_dicts() == history.to_dicts()
    assert all(by.startswith("dagster run ") for by in after["deployed_by"])
    audit = store.deployed_adapter()
    assert (audit["cycle"], audit["serving_now"]) == ("cycle-2", True)
    assert store.find_adapter("bootstrap")["serving_now"] is False


def test_redeploying_the_newest_cycle_appends_a_row(wheel):
    defs, instance, store = wheel
    before = store.deployment_history().height
    assert backfill(defs, instance, "cycle-2", ["deployed_student"]).success
    meta = latest_metadata(instance, "deployed_student", "cycle-2")
    assert meta["deployed"] is False and "already serves this adapter" in meta["reason"]
    assert store.deployment_history().height == before
