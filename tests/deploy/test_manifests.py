"""Protects the Kubernetes deployment: every manifest validates against the Kubernetes schemas
(offline), the Helm values' pod pieces are valid Kubernetes objects, the NeMo pod file is what
the launcher builds, and the cluster profiles keep the local run queue's limits."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from resources.finetune.nemo import nemo_launcher

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.33"  # the oldest Kubernetes the manifests are written for
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
VALUES = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
USER_CODE = VALUES["dagster-user-deployments"]["deployments"][0]


def _validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _camel_keys(data):
    if isinstance(data, dict):
        return {_camel(k): _camel_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_camel_keys(v) for v in data]
    return data


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        _validate(doc)


def test_a_broken_manifest_is_rejected():
    pod = yaml.safe_load((DEPLOY / "k8s" / "nemo-finetune-pod.yaml").read_text())
    pod["spec"]["tolerations"][0]["operator"] = ["Exists"]
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(pod)


def test_the_user_code_deployment_is_a_valid_deployment():
    container = {
        "name": USER_CODE["name"],
        "image": f"{USER_CODE['image']['repository']}:{USER_CODE['image']['tag']}",
        "imagePullPolicy": USER_CODE["image"]["pullPolicy"],
        "args": ["dagster", "api", "grpc", *USER_CODE["dagsterApiGrpcArgs"]],
        "ports": [{"containerPort": USER_CODE["port"]}],
        "env": USER_CODE["env"],
        "envFrom": [{"secretRef": s} for s in USER_CODE["envSecrets"]],
        "volumeMounts": USER_CODE["volumeMounts"],
        "resources": USER_CODE["resources"],
    }
    labels = {"app": USER_CODE["name"]}
    _validate(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": USER_CODE["name"], "namespace": "flywheel"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container], "volumes": USER_CODE["volumes"]},
                },
            },
        }
    )
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    run_pod = {"name": "run", "image": container["image"], "resources": launcher["resources"]}
    _validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "run"},
            "spec": {"containers": [run_pod], "restartPolicy": "Never"},
        }
    )


def test_the_secrets_the_values_name_exist():
    secrets = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all((DEPLOY / "k8s" / "secrets.yaml").read_text())
    }
    env = {e["name"]: e["value"] for e in USER_CODE["env"]}
    named = {s["name"] for s in USER_CODE["envSecrets"]}
    named |= {VALUES["global"]["postgresqlSecretName"], env["FLYWHEEL_K8S_ENV_SECRET"]}
    assert named <= secrets
    pvc = yaml.safe_load((DEPLOY / "k8s" / "pvc.yaml").read_text())
    assert env["FLYWHEEL_K8S_PVC"] == pvc["metadata"]["name"]
    assert {v["persistentVolumeClaim"]["claimName"] for v in USER_CODE["volumes"]} == {
        pvc["metadata"]["name"]
    }


def test_the_nemo_pod_file_is_what_the_launcher_builds_from_the_values():
    env = {e["name"]: e["value"] for e in USER_CODE["env"]}
    launcher = nemo_launcher("nemo-k8s", env, Path(env["FLYWHEEL_HOME"]))
    pod = yaml.safe_load((DEPLOY / "k8s" / "nemo-finetune-pod.yaml").read_text())
    assert pod["spec"] == launcher.pod_spec()
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]


def test_the_cluster_profiles_keep_the_local_run_queue():
    local = yaml.safe_load((REPO / "flywheel_cli" / "dagster.yaml").read_text())
    cluster = yaml.safe_load((REPO / "flywheel_cli" / "dagster-cluster.yaml").read_text())
    for key in ("run_coordinator", "concurrency", "run_retries", "run_monitoring"):
        assert cluster[key] == local[key], key
    assert cluster["storage"]["postgres"]["postgres_url"] == {
        "env": "FLYWHEEL_DAGSTER_POSTGRES_URL"
    }
    helm = VALUES["concurrency"]
    assert helm["enabled"] and _camel_keys(local["concurrency"]) == {
        k: v for k, v in helm.items() if k != "enabled"
    }
    retries = VALUES["dagsterDaemon"]["runRetries"]
    assert retries == _camel_keys(local["run_retries"])
    # A killed run's pool slot is freed (else its retry waits forever), as locally.
    monitoring = VALUES["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] and local["run_monitoring"]["enabled"]
    assert (
        monitoring["freeSlotsAfterRunEndSeconds"]
        == (local["run_monitoring"]["free_slots_after_run_end_seconds"])
    )
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"


def test_the_kubernetes_page_names_every_setting():
    page = (REPO / "docs" / "kubernetes.md").read_text()
    names = {e["name"] for e in USER_CODE["env"]}
    for doc in yaml.safe_load_all((DEPLOY / "k8s" / "secrets.yaml").read_text()):
        names |= {doc["metadata"]["name"], *doc["stringData"]}
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"docs/kubernetes.md does not name {missing}"
