"""Protects storage: idempotent lineage writes, cycle order, content-addressed artifacts."""

from __future__ import annotations

import polars as pl
import pytest

from flywheel_core.hashing import sha256_dir
from resources.artifacts.local import LocalArtifactStore
from resources.lineage.store import LineageStore


def test_replace_rows_is_idempotent_per_cycle(tmp_path):
    store = LineageStore(home=str(tmp_path))
    rows = pl.DataFrame(
        {"cycle": ["a", "a"], "line_no": [1, 2], "raw": ["x", "y"], "reason": ["r", "r"]}
    )
    store.replace_rows("feedback_quarantine", rows, cycle="a")
    store.replace_rows("feedback_quarantine", rows, cycle="a")
    store.replace_rows("feedback_quarantine", rows.with_columns(cycle=pl.lit("b")), cycle="b")
    counts = store.query(
        "SELECT cycle, count(*) AS n FROM feedback_quarantine GROUP BY 1 ORDER BY 1"
    )
    assert counts.to_dicts() == [{"cycle": "a", "n": 2}, {"cycle": "b", "n": 2}]


def test_cycle_order_and_previous_cycle(tmp_path):
    store = LineageStore(home=str(tmp_path))
    assert [store.register_cycle(c) for c in ("one", "two", "three")] == [1, 2, 3]
    assert store.register_cycle("two") == 2
    store.replace_rows(
        "evaluations", pl.DataFrame({"cycle": ["one"], "accuracy": [0.5]}), cycle="one"
    )
    assert store.previous_cycle("three", "evaluations") == "one"
    assert store.previous_cycle("one", "evaluations") is None
    assert store.cycles_up_to("two") == ["one", "two"]


def test_artifacts_are_content_addressed_and_verified(tmp_path):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x00\x01" * 100)
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    ref = store.put_dir(src, "adapters")
    assert ref.sha256 == sha256_dir(src) and ref.uri.endswith(ref.sha256)
    assert store.put_dir(src, "adapters") == ref
    path = store.local_dir(ref)
    (path / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(Exception, match="corrupted"):
        store.local_dir(ref)


def test_a_store_from_before_the_registry_columns_gains_them(tmp_path):
    import duckdb

    from resources.lineage.schema import ADDED_COLUMNS, TABLES

    old_columns = TABLES["adapters"].split(", data_version")[0]
    with duckdb.connect(str(tmp_path / "lineage.duckdb")) as con:
        con.execute(f"CREATE TABLE adapters ({old_columns})")
        con.execute("INSERT INTO adapters (cycle, adapter_sha256) VALUES ('a', 'abc')")
    store = LineageStore(home=str(tmp_path))
    adapters = store.query("SELECT * FROM adapters")
    added = [column.split()[0] for column in ADDED_COLUMNS["adapters"]]
    assert set(added) <= set(adapters.columns) and adapters["adapter_sha256"].to_list() == ["abc"]
