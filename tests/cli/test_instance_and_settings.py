"""Protects what the CLI writes for the UI: the instance config (run queue, one cycle per
flywheel, finetune pool of one, retries) and the demo's settings overrides file."""

from __future__ import annotations

import dagster as dg

from flywheel_assets.definitions import build_definitions
from flywheel_cli.instance import write_instance_config
from flywheel_cli.main import persist_settings, ui_command


def test_the_shipped_instance_config_limits_runs_and_pools(tmp_path):
    (tmp_path / "dagster.yaml").write_text("")  # an empty config from an older demo
    write_instance_config(tmp_path)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        runs = instance.get_concurrency_config().run_queue_config
        (limit,) = runs.tag_concurrency_limits
        assert limit == {
            "key": "flywheel/wheel",
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        }
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
    finally:
        instance.dispose()


def test_a_hand_edited_instance_config_is_kept(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    write_instance_config(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


def _code_versions(defs: dg.Definitions) -> dict[str, str | None]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}


def test_demo_overrides_persist_so_the_ui_computes_the_same_code_versions(tmp_path, monkeypatch):
    monkeypatch.delenv("FLYWHEEL_CONFIG", raising=False)
    overrides = ["training.steps_per_cycle=7", "exam.num_questions=20"]
    path = persist_settings(tmp_path, overrides)
    assert path == tmp_path / "overrides.yaml"
    demo = build_definitions(env={}, home=tmp_path, overrides=overrides)
    ui = build_definitions(env={"FLYWHEEL_CONFIG": str(path)}, home=tmp_path)
    assert _code_versions(ui) == _code_versions(demo)
    assert _code_versions(ui) != _code_versions(build_definitions(env={}, home=tmp_path))
    assert f"FLYWHEEL_CONFIG={path}" in ui_command(tmp_path, path)
    # the next demo without --set runs on the defaults, and so does the UI
    assert persist_settings(tmp_path, []) is None and not path.exists()
    assert "FLYWHEEL_CONFIG" not in ui_command(tmp_path, None)
