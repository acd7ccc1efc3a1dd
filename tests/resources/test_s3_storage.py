"""Protects production storage: artifacts and feedback on a real S3 server, nothing local."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_assets.sensors import feedback_sensor
from flywheel_core.hashing import sha256_dir
from tests.conftest import TINY_OVERRIDES
from tests.support.feedback_files import feedback_jsonl
from tests.support.flywheel_runner import run_cycles
from tests.support.s3_server import s3_client, weed_mini

BUCKET = "flywheel-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    data = tmp_path_factory.mktemp("weed")
    with weed_mini(data) as endpoint:
        client = s3_client(endpoint, CREDENTIALS)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client


@pytest.fixture()
def s3_env(s3_endpoint, cache_dir, monkeypatch) -> dict[str, str]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # read through dg.EnvVar at run time
    return {
        "FLYWHEEL_ENV": "local",
        "FLYWHEEL_STORAGE": "s3",
        "FLYWHEEL_S3_BUCKET": BUCKET,
        "FLYWHEEL_S3_ENDPOINT_URL": s3_endpoint[0],
        "AWS_REGION": "us-east-1",
        "FLYWHEEL_CACHE": str(cache_dir),
        **CREDENTIALS,
    }


def test_artifact_round_trip_is_content_addressed_and_verified(s3_env, s3_endpoint, tmp_path):
    declared = build_definitions(env=s3_env, home=tmp_path).resources["artifacts"]
    with dg.build_resources({"artifacts": declared}) as resources:  # resolves the EnvVars
        check_round_trip(resources.artifacts, s3_endpoint[1], tmp_path)


def check_round_trip(store, client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"\x01\x02" * 1000)
    (src / "sub" / "config.json").write_text("{}")
    ref = store.put_dir(src, "adapters")
    assert ref.uri == f"s3://{BUCKET}/flywheel/artifacts/adapters/{sha256_dir(src)}"
    assert store.put_dir(src, "adapters") == ref
    local = store.local_dir(ref)
    assert sha256_dir(local) == ref.sha256 and not (tmp_path / "artifacts").exists()
    (local / "weights.bin").write_bytes(b"tampered cache")
    assert sha256_dir(store.local_dir(ref)) == ref.sha256  # a bad cache is fetched again
    client.put_object(
        Bucket=BUCKET,
        Key=f"flywheel/artifacts/adapters/{ref.sha256}/weights.bin",
        Body=b"tampered object",
    )
    shutil.rmtree(local)
    with pytest.raises(dg.Failure, match="corrupted"):
        store.local_dir(ref)


def test_full_cycle_on_s3_writes_nothing_to_the_local_artifact_dir(s3_env, s3_endpoint, tmp_path):
    client = s3_endpoint[1]
    client.put_object(
        Bucket=BUCKET, Key="flywheel/feedback/2026/wk47.jsonl", Body=feedback_jsonl("s3")
    )
    defs = build_definitions(env=s3_env, home=tmp_path, overrides=TINY_OVERRIDES)
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        (request,) = feedback_sensor(context).run_requests
    assert request.tags["flywheel/feedback_file"] == "2026/wk47.jsonl"
    defs, _ = run_cycles(
        tmp_path, s3_env, ["bootstrap", request.partition_key], TINY_OVERRIDES, instance
    )
    store = defs.resources["store"]
    adapters = store.query("SELECT cycle, uri, adapter_sha256 FROM adapters ORDER BY cycle")
    assert all(
        uri.startswith(f"s3://{BUCKET}/flywheel/artifacts/adapters/") for uri in adapters["uri"]
    )
    for sha in adapters["adapter_sha256"]:
        key = f"flywheel/artifacts/adapters/{sha}/adapter_model.safetensors"
        assert client.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0
    batch = store.query(
        "SELECT uri, accepted FROM feedback_batch_summary WHERE cycle = ?", [request.partition_key]
    ).row(0, named=True)
    assert batch == {"uri": f"s3://{BUCKET}/flywheel/feedback/2026/wk47.jsonl", "accepted": 4}
    assert not (tmp_path / "artifacts").exists()
    assert not any(Path(tmp_path).glob("**/feedback/*.jsonl"))
