"""Protects the order of cycles: three batches in one sensor tick run one after another, every
curriculum holds all earlier batches, and the audit's reverse query reads the curricula."""

from __future__ import annotations

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_assets.sensors import feedback_sensor
from tests.conftest import TINY_OVERRIDES
from tests.support.feedback_files import drop, feedback_jsonl
from tests.support.flywheel_runner import latest_metadata, run_cycles

FILES = ["batch-1.jsonl", "batch-2.jsonl", "batch-3.jsonl"]


@pytest.fixture(scope="module")
def three_batches(tmp_path_factory, cache_dir):
    home = tmp_path_factory.mktemp("order-home")
    env = {"FLYWHEEL_ENV": "local", "FLYWHEEL_CACHE": str(cache_dir)}
    for name in FILES:
        drop(home / "feedback", name, feedback_jsonl(name))
    defs = build_definitions(env=env, home=home, overrides=TINY_OVERRIDES)
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        keys = [r.partition_key for r in feedback_sensor(context).run_requests]
    assert len(keys) == 3  # one tick, three cycles
    defs, instance = run_cycles(home, env, keys, TINY_OVERRIDES, instance)
    return defs.resources["store"], instance, keys


def test_each_cycle_builds_on_the_one_before_it(three_batches):
    store, instance, keys = three_batches
    seqs = [store.cycle_seq(k) for k in keys]
    assert seqs == sorted(seqs)
    assert [store.predecessor(k) for k in keys] == [None, keys[0], keys[1]]
    for before, key in zip(keys, keys[1:], strict=False):
        meta = latest_metadata(instance, "curriculum", key)
        assert meta["previous_curriculum_cycle"] == before
        adapter = store.adapter(key)
        assert adapter["init_adapter_sha256"] == store.adapter(before)["adapter_sha256"]


def trainable_rows(store) -> dict[str, int]:
    """Accepted feedback rows per cycle that may be trained on (not held out for evaluation)."""
    rows = store.query("SELECT cycle, count(*) FILTER (WHERE NOT heldout) FROM feedback GROUP BY 1")
    return dict(rows.iter_rows())


def test_every_curriculum_holds_all_earlier_batches(three_batches):
    store, _, keys = three_batches
    trainable = trainable_rows(store)
    assert sum(trainable.values()) >= 6  # 12 rows fed, a few held out by hash
    for i, key in enumerate(keys):
        rows = store.query(
            "SELECT added_in_cycle, count(*) AS n FROM curricula "
            "WHERE cycle = ? AND origin = 'feedback' GROUP BY 1 ORDER BY 1",
            [key],
        )
        expected = {k: trainable[k] for k in keys[: i + 1] if trainable[k]}
        assert dict(rows.iter_rows()) == expected


def test_the_reverse_query_matches_the_curricula(three_batches):
    store, _, keys = three_batches
    trainable = trainable_rows(store)
    for i, key in enumerate(keys):
        influenced = store.feedback_influence(key)
        assert influenced["adapter_cycle"].to_list() == keys[i:]
        assert influenced["feedback_rows_used"].to_list() == [trainable[key]] * (len(keys) - i)
        by_file = store.feedback_influence(FILES[i])
        assert by_file["adapter_cycle"].to_list() == keys[i:]
