"""Protects forward-only deployment: an old cycle never replaces a newer cycle's deployment."""

from __future__ import annotations

from flywheel_core.teaching.deploy_order import refuse_reason

NEWEST = {"cycle": "seed-03", "seq": 3, "model_version": 3}


def serving(action: str, cycle: str = "seed-03", version: int = 3) -> dict:
    return {"deployed_in": cycle, "model_version": version, "action": action}


def test_first_and_newer_cycles_deploy():
    assert refuse_reason("bootstrap", 1, None, None) is None
    assert refuse_reason("seed-04", 4, NEWEST, serving("deploy")) is None
    assert refuse_reason("seed-04", 4, NEWEST, serving("rollback", "bootstrap", 1)) is None


def test_the_newest_cycle_may_redeploy_itself():
    assert refuse_reason("seed-03", 3, NEWEST, serving("deploy")) is None


def test_an_old_cycle_never_replaces_a_newer_deployment():
    reason = refuse_reason("bootstrap", 1, NEWEST, serving("deploy"))
    assert reason is not None and reason.startswith("not deployed: a newer cycle serves")
    assert "seed-03" in reason and "v3" in reason


def test_a_rollback_is_not_undone_by_rematerializing_the_rolled_back_cycle():
    reason = refuse_reason("seed-03", 3, NEWEST, serving("rollback", "seed-02", 2))
    assert reason is not None and "rolled back to v2" in reason
