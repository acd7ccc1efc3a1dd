"""Protects storage: idempotent lineage writes, cycle order, content-addressed artifacts.

The lineage tests run on both backends: the embedded DuckDB file and a DuckLake (local catalog
file + local data directory; tests/resources/test_lineage_ducklake.py covers Postgres + S3).
"""

from __future__ import annotations

import polars as pl
import pytest

from flywheel_core.hashing import sha256_dir
from resources.artifacts.local import LocalArtifactStore
from resources.lineage.store import LineageStore


@pytest.fixture(params=["duckdb", "ducklake"])
def new_store(request):
    """A fresh lineage store under a home, on the parametrized backend."""
    return lambda home: LineageStore(home=str(home), backend=request.param)


def test_replace_rows_is_idempotent_per_cycle(tmp_path, new_store):
    store = new_store(tmp_path)
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


def test_cycle_order_and_previous_cycle(tmp_path, new_store):
    store = new_store(tmp_path)
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


def test_a_current_file_store_is_not_rewritten_by_reads(tmp_path):
    """The file is re-opened for every read: with its recorded DDL hash current, an open runs
    no DDL, so reads leave the file byte for byte as it was."""
    store = LineageStore(home=str(tmp_path))
    store.replace_rows("feedback", _feedback("a"), cycle="a")
    before = store.db_path.read_bytes()
    assert store.query("SELECT count(*) AS n FROM feedback")["n"][0] == 2
    assert store.query("SELECT * FROM adapter_lineage").is_empty()
    assert store.db_path.read_bytes() == before


def test_a_file_store_with_another_ddl_hash_is_brought_up_to_date(tmp_path):
    import duckdb

    store = LineageStore(home=str(tmp_path))
    store.replace_rows("feedback", _feedback("a"), cycle="a")
    with duckdb.connect(str(store.db_path)) as con:  # as an older release left it
        con.execute("DROP VIEW feedback_influence")
        con.execute("UPDATE lineage_schema SET ddl_sha256 = 'older'")
    assert store.query("SELECT * FROM feedback_influence").is_empty()
    assert store.query("SELECT count(*) AS n FROM feedback")["n"][0] == 2


def _feedback(cycle: str, n: int = 2) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "cycle": [cycle] * n,
            "item_id": [f"{cycle}-{i}" for i in range(n)],
            "line_no": list(range(1, n + 1)),
            "code": ["x = 1"] * n,
            "review": ["r"] * n,
            "severity": ["minor"] * n,
        }
    )


def test_cycles_build_on_the_last_completed_one_and_take_all_earlier_feedback(tmp_path, new_store):
    store = new_store(tmp_path)
    for c in ("a", "b", "c"):
        store.register_cycle(c)
        store.replace_rows("feedback", _feedback(c), cycle=c)
    # b stopped after its curriculum (no adapter): c must not mix b's curriculum with a's adapter.
    store.replace_rows(
        "adapters", pl.DataFrame({"cycle": ["a"], "adapter_sha256": ["sa"]}), cycle="a"
    )
    store.replace_rows(
        "curricula",
        pl.DataFrame({"cycle": ["b"], "item_id": ["b-0"], "origin": ["feedback"]}),
        cycle="b",
    )
    assert store.predecessor("c") == "a" and store.predecessor("a") is None
    assert store.previous_curriculum("c")[0] == "a"
    added = store.new_curriculum_rows("c")
    assert sorted(added["added_in_cycle"].unique()) == ["a", "b", "c"]  # b's batch not dropped
    assert store.new_curriculum_rows("a")["added_in_cycle"].unique().to_list() == ["a"]


def test_feedback_influence_reads_the_curricula(tmp_path, new_store):
    store = new_store(tmp_path)
    for c in ("a", "b", "c"):
        store.register_cycle(c)
        store.replace_rows("feedback", _feedback(c), cycle=c)
    # c's curriculum holds a's and c's feedback only (b's was never in it).
    rows = [("a", "a"), ("a", "a"), ("c", "a"), ("c", "c")]
    store.replace_rows(
        "curricula",
        pl.DataFrame(
            {
                "cycle": [r[0] for r in rows],
                "item_id": [f"i{i}" for i in range(4)],
                "origin": ["feedback"] * 4,
                "added_in_cycle": [r[1] for r in rows],
            }
        ),
    )
    adapters = pl.DataFrame(
        {"cycle": ["a", "c"], "adapter_sha256": ["sa", "sc"], "curriculum_cycle": ["a", "c"]}
    )
    store.replace_rows("adapters", adapters)
    assert store.feedback_influence("a")["adapter_cycle"].to_list() == ["a", "c"]
    assert store.feedback_influence("a")["feedback_rows_used"].to_list() == [2, 1]
    assert store.feedback_influence("b").is_empty()  # not "every later adapter"
    assert store.feedback_influence("c")["adapter_cycle"].to_list() == ["c"]


def test_warm_start_chain_is_every_ancestor_oldest_first(tmp_path, new_store):
    store = new_store(tmp_path)
    parents = {"a": None, "b": "a", "side": None, "c": "b"}  # cycle -> the cycle it warm-starts
    for cycle, parent in parents.items():
        store.register_cycle(cycle)
        row = {"cycle": cycle, "adapter_sha256": f"sha-{cycle}", "curriculum_cycle": cycle}
        row["init_adapter_sha256"] = parent and f"sha-{parent}"
        store.replace_rows("adapters", pl.DataFrame([row]), cycle=cycle)
    chain = store.warm_start_chain(store.find_adapter("c"))
    assert [a["cycle"] for a in chain] == ["a", "b", "c"]
    assert chain == [store.find_adapter(cycle) for cycle in ("a", "b", "c")]
    assert store.warm_start_chain(store.find_adapter("side")) == [store.find_adapter("side")]


def test_reads_in_one_reading_block_see_one_snapshot(tmp_path, new_store):
    store = new_store(tmp_path)
    store.replace_rows("feedback", _feedback("a"), cycle="a")

    def count() -> int:
        return store.query("SELECT count(*) AS n FROM feedback")["n"][0]

    with store.reading():
        assert count() == 2
        store.replace_rows("feedback", _feedback("a", 5), cycle="a")  # its own transaction
        assert count() == 2  # still the block's snapshot
    assert count() == 5
