"""Protects the DuckLake lineage backend on real servers: catalog in Postgres, data on S3.

Same tables, views and queries as the embedded file; idempotent per-partition writes keep their
meaning with four writer processes at once (conflicts retried, no row lost, none doubled).
"""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import UTC, datetime

import polars as pl
import pytest

from flywheel_cli.local_servers import s3_client
from flywheel_cli.main import main
from resources.lineage.store import LineageStore
from resources.teacher import ledger

WRITERS = 4
ROUNDS = 3


@pytest.fixture()
def lake(postgres_server, lake_s3, tmp_path) -> dict:
    """Settings of a fresh DuckLake: its own catalog database and S3 prefix."""
    name = f"lake_{uuid.uuid4().hex[:8]}"
    return {
        "home": str(tmp_path / "home"),
        "backend": "ducklake",
        "catalog": postgres_server.create_database(name),
        "data_path": f"s3://lake/{name}/",
        **lake_s3,
    }


def _feedback(cycle: str, n: int, tag: str = "") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "cycle": [cycle] * n,
            "item_id": [f"{cycle}-{tag}{i}" for i in range(n)],
            "line_no": list(range(1, n + 1)),
            "code": ["x = 1"] * n,
            "review": [f"r {tag}"] * n,
            "severity": ["minor"] * n,
        }
    )


def _s3_keys(lake: dict) -> list[str]:
    client = s3_client(lake["s3_endpoint_url"], lake)
    prefix = lake["data_path"].removeprefix("s3://lake/")
    listed = client.list_objects_v2(Bucket="lake", Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_the_lineage_queries_run_on_postgres_and_s3(lake, tmp_path):
    store = LineageStore(**lake)
    for c in ("a", "b", "c"):
        assert store.register_cycle(c) == "abc".index(c) + 1
        store.replace_rows("feedback", _feedback(c, 3), cycle=c)
    store.replace_rows("feedback", _feedback("a", 3), cycle="a")  # idempotent
    store.replace_rows(
        "curricula",
        pl.DataFrame(
            {"cycle": ["c", "c"], "item_id": ["a-0", "c-0"], "origin": ["feedback"] * 2}
        ).with_columns(added_in_cycle=pl.col("item_id").str.head(1)),
        cycle="c",
    )
    store.replace_rows(
        "adapters",
        pl.DataFrame({"cycle": ["c"], "adapter_sha256": ["abcdef0123"], "curriculum_cycle": ["c"]}),
        cycle="c",
    )
    store.record_deploy(
        {
            "cycle": "c",
            "adapter_sha256": "abcdef0123",
            "model_version": 1,
            "action": "deploy",
            "deployed_at": datetime.now(UTC),
        }
    )
    assert store.find_adapter("v1")["cycle"] == "c"
    deployed_at = int(store.snapshots()["snapshot_id"].max())
    assert store.deployed_adapter()["feedback_rows"] == 9
    assert store.feedback_influence("a")["adapter_cycle"].to_list() == ["c"]
    assert store.new_curriculum_rows("c").height == 9
    # The teacher cache and token ledger live in the lake too.
    reply = ledger.CachedReply("{}", "json_schema", 10, 2)
    ledger.remember(store, "k1", "m", reply)
    ledger.remember(store, "k1", "m", reply)
    assert ledger.lookup(store, ["k1", "k2"]) == {"k1": reply}
    # A large write lands as Parquet under the S3 prefix; nothing is written under the home.
    store.replace_rows("feedback", _feedback("b", 20_000), cycle="b")
    assert store.query("SELECT count(*) AS n FROM feedback")["n"][0] == 20_006
    assert any(key.endswith(".parquet") for key in _s3_keys(lake))
    assert not (tmp_path / "home").exists()
    # Time travel: the feedback as it was when version 1 was deployed.
    then = store.query(f"SELECT count(*) AS n FROM feedback AT (VERSION => {deployed_at})")
    assert then["n"][0] == 9


def _writer(settings: dict, worker: int, results) -> None:
    """Register a cycle, rewrite its partition ROUNDS times, append ledger rows, and rewrite a
    partition every writer rewrites."""
    from resources.lineage.store import WRITE_COUNTERS

    store = LineageStore(**settings)  # the default retry bound
    cycle = f"w{worker}"
    store.register_cycle(cycle)
    for i in range(ROUNDS):
        store.replace_rows("feedback", _feedback(cycle, 50, tag=f"{i}-"), cycle=cycle)
        store.replace_rows("feedback", _feedback("shared", 5, tag=f"{worker}-"), cycle="shared")
        store.append_rows(
            "teacher_ledger", pl.DataFrame({"cycle": [cycle], "call_key": [f"{worker}/{i}"]})
        )
    results.put((worker, WRITE_COUNTERS.writes, WRITE_COUNTERS.retries))


def test_four_writer_processes_lose_no_row(lake):
    LineageStore(**lake).query("SELECT 1")  # the lake exists before the race
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(lake, w, results)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    done = [results.get(timeout=5) for _ in procs]
    assert sum(writes for _, writes, _ in done) == WRITERS * (1 + 3 * ROUNDS)
    store = LineageStore(**lake)
    cycles = store.query("SELECT cycle, seq FROM cycles ORDER BY seq")
    assert cycles["seq"].to_list() == list(range(1, WRITERS + 1))  # distinct places
    per_cycle = store.query(
        "SELECT cycle, count(*) AS n, count(DISTINCT item_id) AS items, min(review) AS review "
        "FROM feedback GROUP BY 1 ORDER BY 1"
    )
    mine = per_cycle.filter(pl.col("cycle") != "shared")
    assert mine["n"].to_list() == [50] * WRITERS and mine["items"].to_list() == [50] * WRITERS
    assert mine["review"].to_list() == [f"r {ROUNDS - 1}-"] * WRITERS  # the last round's rows
    shared = per_cycle.filter(pl.col("cycle") == "shared").row(0, named=True)
    assert shared["n"] == 5 and shared["items"] == 5  # one writer's rows: never two, never none
    assert store.query("SELECT count(*) AS n FROM teacher_ledger")["n"][0] == WRITERS * ROUNDS


def _deploy_cycle(
    store: LineageStore, cycle: str, file: str, rows: int, version: int, init=None, before=()
):
    """A cycle's lineage as the assets write it: batch, feedback, adapter, deployment."""
    sha = f"{cycle * 8}{version:02d}"
    store.register_cycle(cycle)
    store.replace_rows("feedback", _feedback(cycle, rows), cycle=cycle)
    store.replace_rows(
        "feedback_batches",
        pl.DataFrame(
            {"cycle": [cycle], "file_name": [file], "sha256": [f"{cycle}0f1e2d3c"]}
            | {"received": [rows], "accepted": [rows], "quarantined": [0]}
        ),
        cycle=cycle,
    )
    store.replace_rows(  # the curriculum: every batch so far
        "curricula",
        pl.DataFrame({"cycle": cycle, "added_in_cycle": [*before, cycle], "origin": "feedback"}),
        cycle=cycle,
    )
    store.replace_rows(
        "adapters",
        pl.DataFrame(
            {"cycle": [cycle], "adapter_sha256": [sha], "uri": [f"s3://lake/adapters/{sha}"]}
            | {"base_model": ["tiny-llama"], "init_adapter_sha256": [init]}
            | {"curriculum_cycle": [cycle], "steps": [6], "final_loss": [0.5], "config": ["{}"]}
        ),
        cycle=cycle,
    )
    store.record_deploy(
        {"cycle": cycle, "adapter_sha256": sha, "model_name": "flywheel_student"}
        | {"model_version": version, "action": "deploy", "deployed_at": datetime.now(UTC)}
    )
    return sha


def test_audit_as_of_a_deployment_reads_the_lake_at_that_snapshot(
    lake, tmp_path, monkeypatch, capsys
):
    store = LineageStore(**lake)
    first = _deploy_cycle(store, "a", "week-1.jsonl", 3, version=1)
    second = _deploy_cycle(store, "b", "week-2.jsonl", 2, version=2, init=first, before=["a"])
    store.replace_rows("feedback", _feedback("a", 5), cycle="a")  # cycle a re-materialized later
    env = {
        "FLYWHEEL_LINEAGE": "ducklake",
        "FLYWHEEL_LINEAGE_CATALOG": lake["catalog"],
        "FLYWHEEL_LINEAGE_DATA_PATH": lake["data_path"],
        "FLYWHEEL_S3_ENDPOINT_URL": lake["s3_endpoint_url"],
        "AWS_REGION": lake["s3_region"],
        "AWS_ACCESS_KEY_ID": lake["s3_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": lake["s3_secret_access_key"],
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    home = ["--home", lake["home"]]

    def audit(*args: str) -> tuple[int, str, str]:
        code = main(["audit", *args, *home])
        out, err = capsys.readouterr()
        return code, out, err

    code, now, _ = audit("v1")
    assert code == 0 and "flywheel_student v1 (not serving now)" in now
    assert "| feedback rows up to this cycle | 5 |" in now

    code, then, _ = audit("--as-of-version", "1")
    assert code == 0
    assert then.startswith("_As of DuckLake snapshot ")
    assert f"Lineage of adapter {first[:12]}" in then
    assert "flywheel_student v1 (serving now)" in then
    assert "| feedback rows up to this cycle | 3 |" in then
    assert "week-1.jsonl" in then and "week-2.jsonl" not in then

    code, later, _ = audit("--as-of-version", "2")
    assert code == 0 and "flywheel_student v2 (serving now)" in later
    assert f"Lineage of adapter {second[:12]}" in later
    assert "week-1.jsonl" in later and "week-2.jsonl" in later
    snapshot = int(then.split()[4])
    assert int(later.split()[4]) > snapshot
    assert snapshot in store.snapshots()["snapshot_id"].to_list()

    # A batch's influence as of v1: cycle a's adapter only (b did not exist yet).
    code, influence, _ = audit("--as-of-version", "1", "--feedback", "week-1.jsonl")
    assert code == 0 and first[:12] in influence and second[:12] not in influence
    code, influence, _ = audit("--feedback", "week-1.jsonl")
    assert code == 0 and first[:12] in influence and second[:12] in influence

    assert audit("--as-of-version", "9")[:2] == (
        1,
        "flywheel audit: no deployment v9 in the lineage\n",
    )


def test_audit_as_of_a_deployment_on_the_file_backend_is_a_one_line_error(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("FLYWHEEL_LINEAGE", raising=False)
    LineageStore(home=str(tmp_path)).register_cycle("a")
    assert main(["audit", "--as-of-version", "1", "--home", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert "keeps no snapshots" in err and "FLYWHEEL_LINEAGE=ducklake" in err
