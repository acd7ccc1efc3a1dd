"""Protects serving end to end: the real bundled Triton server on loopback, the tiny student.

The tests run in file order on one flywheel home: cycle `bootstrap` deploys v1, `cycle-2`
deploys v2, then bad versions (wrong sha256, failing load, failing gate) leave v2 serving, and
a rollback re-points to v1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from flywheel_cli import main as cli
from flywheel_cli import runner
from flywheel_core.hashing import sha256_dir
from flywheel_core.ml.base_model import SMOLLM2, load_model_and_tokenizer, resolve_base_model
from flywheel_core.ml.explaining import generate_explanations
from flywheel_core.ml.lora_training import TrainConfig, build_peft_model
from flywheel_core.severity import SEVERITIES
from resources.triton.client import ReviewClient
from resources.triton.repository import TritonModelRepository
from resources.triton.rollout import go_live
from resources.triton.server import TritonServer, server_from_env
from tests.conftest import TINY_OVERRIDES
from tests.support.ports import free_ports

STRICT_GATE = ["gate.max_accuracy_drop=0.0", "gate.block_recall_collapse=true"]
UPSTREAM = ["reviewer_feedback", "exam", "student_answers", "exam_evaluation", "curriculum"]


class Flywheel:
    """A flywheel home with its own Triton server and Dagster instance."""

    def __init__(self, home: Path, cache_dir: Path) -> None:
        http, grpc, metrics = free_ports(3)
        self.home = home
        self.env = {
            "FLYWHEEL_ENV": "local",
            "FLYWHEEL_CACHE": str(cache_dir),
            "FLYWHEEL_TRITON_HTTP_PORT": str(http),
            "FLYWHEEL_TRITON_GRPC_PORT": str(grpc),
            "FLYWHEEL_TRITON_METRICS_PORT": str(metrics),
        }
        self.server: TritonServer = server_from_env(self.env, home)
        self.instance = dg.DagsterInstance.ephemeral()

    def defs(self, extra: list[str] | None = None) -> dg.Definitions:
        return build_definitions(self.env, self.home, [*TINY_OVERRIDES, *(extra or [])])

    def run(self, key: str, extra: list[str] | None = None, selection=None):
        defs = self.defs(extra)
        self.instance.add_dynamic_partitions(cycles.name, [key])
        job = defs.resolve_job_def("flywheel_cycle")
        return job.execute_in_process(
            partition_key=key,
            instance=self.instance,
            raise_on_error=False,
            asset_selection=selection,
        )

    @property
    def repo(self) -> TritonModelRepository:
        return TritonModelRepository(repository_dir=str(self.server.repository_dir))

    def client(self, protocol: str = "http") -> ReviewClient:
        url = self.server.http_url if protocol == "http" else self.server.grpc_url
        return ReviewClient(url, protocol)

    def served(self) -> list[int]:
        with self.client() as client:
            return client.served_versions()

    def store(self):
        return self.defs().resources["store"]


@pytest.fixture(scope="module")
def flywheel(tmp_path_factory, cache_dir):
    """Seed corpus built, Triton started on free loopback ports; stopped by pid at teardown."""
    wheel = Flywheel(tmp_path_factory.mktemp("served-home"), cache_dir)
    seeded = (
        wheel.defs().resolve_job_def("seed_corpus_job").execute_in_process(instance=wheel.instance)
    )
    assert seeded.success
    wheel.server.start()
    yield wheel
    wheel.server.stop()


ITEM = ("def f(x):\n    return x/0\n", "This always divides by zero.")


def explain_in_process(repo: TritonModelRepository, version: int, severity: str) -> str:
    """What the version's model writes for ITEM, generated here with its deployment settings."""
    info = repo.deployment_info(version)
    adapter = repo.model_dir() / str(version) / "adapter"
    model, tokenizer = load_model_and_tokenizer(Path(info["base_model_path"]), adapter)
    items = [(*ITEM, severity)]
    new_tokens = info["explanation_max_new_tokens"]
    (text,) = generate_explanations(model, tokenizer, items, max_new_tokens=new_tokens)
    return text


def test_first_cycle_deploys_v1_and_answers_over_http_and_grpc(flywheel, capsys):
    """The deployment asset loads the cycle's adapter on Triton; both protocols answer, with
    the explanation when asked for it (also through `flywheel review --explain`)."""
    result = flywheel.run("bootstrap")
    assert result.success
    (check,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "better_than_deployed"
    ]
    assert check.passed
    assert str(check.metadata["serving_model"].value).startswith("base:")
    assert isinstance(check.metadata["candidate accuracy (%)"], dg.FloatMetadataValue)
    assert flywheel.served() == [1]
    explanations = []
    for protocol in ("http", "grpc"):
        with flywheel.client(protocol) as client:
            result = client.review(*ITEM)
            explained = client.review(*ITEM, explain=True)
        assert result.severity in SEVERITIES and result.explanation is None
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert explained.severity == result.severity
        explanations.append(explained.explanation)
    # The random tiny model writes only newlines (stripped: ""), so the served text is compared
    # with the same model's own generation; the slow test at the end checks real text.
    expected = explain_in_process(flywheel.repo, 1, result.severity)
    assert explanations == [expected, expected]
    code = flywheel.home / "snippet.py"
    code.write_text(ITEM[0])
    capsys.readouterr()
    args = ["review", "--code", str(code), "--comment", ITEM[1], "--explain", "--json"]
    assert cli.main([*args, "--url", flywheel.server.http_url]) == 0
    assert json.loads(capsys.readouterr().out)["explanation"] == expected
    cli.print_served_review(flywheel.server)  # the demo's last step asks for it too
    out = capsys.readouterr().out
    assert "\n  severity " in out and "\n  explanation:" in out
    row = flywheel.store().query("SELECT * FROM deployments").row(0, named=True)
    assert row["served"] and row["model_version"] == 1 and row["action"] == "deploy"


def test_second_cycle_changes_the_served_version(flywheel):
    """A new cycle's adapter replaces the served version; only that one version is loaded."""
    assert flywheel.run("cycle-2").success
    assert flywheel.served() == [2]
    assert flywheel.repo.pinned_version() == 2


def test_wrong_sha256_is_refused_and_v2_keeps_serving(flywheel):
    """An adapter changed after publication never goes live; the previous version serves."""
    info = flywheel.repo.deployment_info(2)
    adapter = flywheel.home / "tampered-adapter"
    shutil.copytree(flywheel.repo.model_dir() / "2" / "adapter", adapter)
    base = Path(info["base_model_path"])
    published = flywheel.repo.publish(adapter, sha256_dir(adapter), base, 96)
    (Path(published.path) / "adapter" / "adapter_config.json").write_text('{"tampered": true}')
    with pytest.raises(dg.Failure, match="sha256"):
        go_live(flywheel.repo, flywheel.server, published.version)
    assert flywheel.served() == [2] and flywheel.repo.pinned_version() == 2
    shutil.rmtree(published.path)


def test_version_failing_to_load_restores_the_previous_one(flywheel):
    """A version Triton cannot load is quarantined and the previous version is loaded again."""
    adapter = flywheel.repo.model_dir() / "2" / "adapter"
    published = flywheel.repo.publish(adapter, sha256_dir(adapter), flywheel.home / "no-model", 96)
    with pytest.raises(dg.Failure, match="v2 serves again"):
        go_live(flywheel.repo, flywheel.server, published.version)
    assert flywheel.served() == [2]
    assert published.version not in flywheel.repo.versions()
    with flywheel.client("grpc") as client:
        assert client.review("x = 1", "rename x").severity in SEVERITIES


def test_gate_blocks_a_worse_adapter_and_v2_keeps_serving(flywheel):
    """A candidate worse on the held-out exam fails the blocking check; nothing is deployed."""
    assert flywheel.run("cycle-3", STRICT_GATE, [dg.AssetKey(k) for k in UPSTREAM]).success
    assert flywheel.run("cycle-3", STRICT_GATE, [dg.AssetKey("lora_adapter")]).success
    store = flywheel.store()
    sha = store.query("SELECT adapter_sha256 FROM adapters WHERE cycle = 'cycle-3'").item()
    served_sha = flywheel.repo.deployment_info(2)["adapter_sha256"]
    # Script the held-out exam through its score cache: deployed all right, candidate all wrong.
    wrong = "CASE severity WHEN 'critical' THEN 'trivial' ELSE 'critical' END"
    with store.connect() as con:
        con.execute(
            "UPDATE heldout_scores SET predicted = severity WHERE model_ref = ?",
            [f"adapter:{served_sha}"],
        )
        con.execute(
            f"INSERT INTO heldout_scores SELECT 'adapter:{sha}', item_id, severity, {wrong} "
            "FROM heldout_scores WHERE model_ref = ?",
            [f"adapter:{served_sha}"],
        )
    last = [dg.AssetKey("heldout_evaluation"), dg.AssetKey("deployed_student")]
    result = flywheel.run("cycle-3", STRICT_GATE, last)
    assert not result.success
    checks = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "better_than_deployed"
    ]
    assert checks and not checks[0].passed
    assert "NOT DEPLOYED" in checks[0].description
    assert runner.gate_blocked(result)  # the demo goes on to the next cycle
    deployed = store.query("SELECT * FROM deployments WHERE cycle = 'cycle-3'")
    assert deployed.is_empty() and flywheel.served() == [2]


def test_rollback_serves_an_earlier_version_and_records_it(flywheel, capsys, monkeypatch):
    """`flywheel rollback bootstrap` re-points Triton to v1 and writes a rollback row."""
    for key, value in flywheel.env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["rollback", "bootstrap", "--home", str(flywheel.home)]) == 0
    assert flywheel.served() == [1]
    rows = flywheel.store().query("SELECT * FROM deployments WHERE action = 'rollback'")
    assert rows["model_version"].to_list() == [1] and rows["served"].to_list() == [True]
    assert rows["deployed_by"][0].startswith("flywheel rollback")
    assert flywheel.store().serving_now()["model_version"] == 1
    assert cli.main(["serve", "status", "--home", str(flywheel.home)]) == 0
    out = capsys.readouterr().out
    status = json.loads(out[out.index("{") :])
    assert status["live"] and status["pinned_version"] == 1 and status["served_versions"] == [1]


@pytest.mark.slow
def test_real_student_explains_its_severity_over_http_and_grpc(flywheel, cache_dir, tmp_path):
    """SmolLM2 with a fresh LoRA (the instruct model as is) answers EXPLAIN with real text."""
    base = resolve_base_model(SMOLLM2, cache_dir)
    adapter = tmp_path / "adapter"
    build_peft_model(TrainConfig(base_model_path=base, output_dir=tmp_path)).save_pretrained(
        adapter
    )
    previous = flywheel.repo.pinned_version()
    extra = {"explanation_max_new_tokens": 48}
    published = flywheel.repo.publish(adapter, sha256_dir(adapter), base, 256, extra)
    go_live(flywheel.repo, flywheel.server, published.version)
    try:
        for protocol in ("http", "grpc"):
            with flywheel.client(protocol) as client:
                result = client.review(*ITEM, explain=True)
            assert result.severity in SEVERITIES
            assert len(result.explanation.split()) >= 5
    finally:
        go_live(flywheel.repo, flywheel.server, previous)


def test_server_env_puts_this_interpreter_first_on_path():
    """The Python-backend stub finds its interpreter prefix through `python3` on PATH: without
    this interpreter's bin dir first it imports another prefix's numpy and corrupts BYTES inputs."""
    import os
    import sys

    from resources.triton.server import server_env

    own = str(Path(sys.executable).parent)
    env = server_env({"PATH": os.pathsep.join(["/root/.pyenv/shims", own, "/usr/bin"])})
    assert env["PATH"].split(os.pathsep) == [own, "/root/.pyenv/shims", "/usr/bin"]
