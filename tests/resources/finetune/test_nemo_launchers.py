"""Protects the NeMo launchers: the exact command, pod spec and ECS task they hand to Pipes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from flywheel_core.ml.finetune_job import FineTuneJob
from flywheel_core.processes import LAUNCHER_PID_ENV
from resources.finetune.nemo import (
    ENTRY_MODULE,
    PROJECT_ROOT,
    NemoEcsLauncher,
    NemoK8sLauncher,
    NemoSubprocessLauncher,
    map_path,
)

ENTRY = ["-m", "flywheel_assets.external.nemo_automodel_lora"]


def _job(root: Path, init: str | None = None) -> FineTuneJob:
    return FineTuneJob(
        base_model_path=str(root / "models" / "base"),
        examples_path=str(root / "work" / "c1" / "curriculum.jsonl"),
        output_dir=str(root / "work" / "c1" / "adapter"),
        init_adapter_dir=init,
        learning_rate=2e-4,
        batch_size=8,
        max_steps=20,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        layers_to_train=None,
        max_prompt_tokens=320,
        seed=0,
        num_threads=1,
    )


def test_the_subprocess_command_and_env():
    launcher = NemoSubprocessLauncher(
        python_executable="/opt/nemo/bin/python",
        gpus=2,
        cuda_visible_devices="0,1",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert ENTRY_MODULE == "flywheel_assets.external.nemo_automodel_lora"
    assert launcher.command() == ["/opt/nemo/bin/python", *ENTRY]
    assert launcher.runner_env() == {
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(PROJECT_ROOT),
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        LAUNCHER_PID_ENV: str(os.getpid()),  # the runner dies with the launching process
    }


def test_a_missing_nemo_python_fails_with_a_clear_error(tmp_path):
    launcher = NemoSubprocessLauncher(python_executable=str(tmp_path / "nope" / "python"))
    with pytest.raises(dg.Failure, match="does not exist or is not executable.*NeMo venv"):
        launcher.check_ready()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/srv/fly/work/c1/adapter", "/flywheel/work/c1/adapter"),
        ("/srv/fly", "/flywheel"),
        ("/srv/flywheel/x", "/srv/flywheel/x"),  # a prefix must end on a path component
        ("/srv/fly/models/base", "/models/base"),  # the longest prefix wins
        ("/elsewhere", "/elsewhere"),
    ],
)
def test_map_path(path, expected):
    assert map_path(path, {"/srv/fly": "/flywheel", "/srv/fly/models/": "/models"}) == expected


def test_extras_carry_the_job_with_mapped_paths_and_the_nemo_options():
    job = _job(Path("/srv/fly"), init="/srv/fly/artifacts/abc")
    launcher = NemoK8sLauncher(
        path_map={"/srv/fly": "/flywheel"},
        gpus=4,
        overrides=["step_scheduler.local_batch_size=1"],
    )
    extras = launcher.extras(job)
    assert extras["job"] == {
        **job.model_dump(),
        "base_model_path": "/flywheel/models/base",
        "examples_path": "/flywheel/work/c1/curriculum.jsonl",
        "output_dir": "/flywheel/work/c1/adapter",
        "init_adapter_dir": "/flywheel/artifacts/abc",
    }
    assert extras["nemo"] == {
        "dataset_root": "/flywheel/work/c1/nemo_data",
        "experiment_dir": "/flywheel/work/c1/nemo_experiment",
        "adapter_name": "severity",
        "device": "auto",
        "nproc_per_node": 4,
        "num_nodes": 1,
        "val_every_steps": 0,
        "recipe": None,
        "overrides": ["step_scheduler.local_batch_size=1"],
    }
    json.dumps(extras)  # Pipes sends it as JSON


K8S = NemoK8sLauncher(
    image="registry.example/flywheel-nemo-automodel:0.7.0",
    gpus=2,
    volume_claim="flywheel-home",
    node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    env_secret="hf-token",
    env={"HF_HUB_OFFLINE": "1"},
    service_account="flywheel",
)


def test_the_exact_k8s_pod_spec():
    assert K8S.pod_spec() == {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "nemo",
                "image": "registry.example/flywheel-nemo-automodel:0.7.0",
                "command": ["python", *ENTRY],
                "env": [
                    {"name": "HF_HUB_OFFLINE", "value": "1"},
                    {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
                ],
                "envFrom": [{"secretRef": {"name": "hf-token"}}],
                "resources": {
                    "limits": {"nvidia.com/gpu": "2"},
                    "requests": {"nvidia.com/gpu": "2"},
                },
                "volumeMounts": [
                    {"name": "dshm", "mountPath": "/dev/shm"},
                    {"name": "flywheel", "mountPath": "/flywheel"},
                ],
            }
        ],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
            {"name": "flywheel", "persistentVolumeClaim": {"claimName": "flywheel-home"}},
        ],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "serviceAccountName": "flywheel",
    }


def test_dagster_k8s_accepts_the_pod_spec_and_keeps_the_gpu_request():
    pipes = pytest.importorskip("dagster_k8s.pipes")
    body = pipes.build_pod_body(
        pod_name="p",
        image=None,
        command=None,
        env_vars={"DAGSTER_PIPES_CONTEXT": "ctx"},
        base_pod_meta=None,
        base_pod_spec=K8S.pod_spec(),
    )
    container = body.spec.containers[0]
    assert container.image == K8S.image and container.command == ["python", *ENTRY]
    assert container.resources.limits == {"nvidia.com/gpu": "2"}
    assert {e.name for e in container.env} >= {"DAGSTER_PIPES_CONTEXT", "TOKENIZERS_PARALLELISM"}
    assert body.spec.volumes[1].persistent_volume_claim.claim_name == "flywheel-home"


def test_the_exact_ecs_run_task_params():
    launcher = NemoEcsLauncher(
        cluster="gpu-cluster",
        task_definition="flywheel-nemo:3",
        gpus=4,
        subnets=["subnet-a", "subnet-b"],
        security_groups=["sg-1"],
        env={"HF_HOME": "/mnt/efs/hf"},
    )
    assert launcher.run_task_params() == {
        "cluster": "gpu-cluster",
        "taskDefinition": "flywheel-nemo:3",
        "count": 1,
        "launchType": "EC2",
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": ["subnet-a", "subnet-b"],
                "securityGroups": ["sg-1"],
                "assignPublicIp": "DISABLED",
            }
        },
        "overrides": {
            "containerOverrides": [
                {
                    "name": "nemo",
                    "command": ["python", *ENTRY],
                    "environment": [
                        {"name": "HF_HOME", "value": "/mnt/efs/hf"},
                        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
                    ],
                    "resourceRequirements": [{"type": "GPU", "value": "4"}],
                }
            ]
        },
    }


def test_an_ecs_capacity_provider_replaces_the_launch_type():
    launcher = NemoEcsLauncher(cluster="c", task_definition="t", capacity_provider="gpu-asg")
    params = launcher.run_task_params()
    assert "launchType" not in params and "networkConfiguration" not in params
    assert params["capacityProviderStrategy"] == [{"capacityProvider": "gpu-asg", "weight": 1}]


class _FakeK8sClient:
    calls: list[dict] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def run(self, **kwargs):
        _FakeK8sClient.calls.append(kwargs)
        result = dg.MaterializeResult(metadata={"steps": 20, "final_loss": 0.3})
        return SimpleNamespace(get_materialize_result=lambda: result)


def test_k8s_launch_writes_the_dataset_and_merges_its_metadata(tmp_path, monkeypatch):
    dagster_k8s = pytest.importorskip("dagster_k8s")
    monkeypatch.setattr(dagster_k8s, "PipesK8sClient", _FakeK8sClient)
    job = _job(tmp_path)
    Path(job.examples_path).parent.mkdir(parents=True)
    rows = [
        {"code": f"x={i}", "review": f"r{i}", "severity": "minor", "weight": 1.0} for i in range(10)
    ]
    Path(job.examples_path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    context = SimpleNamespace(log=logging.getLogger("test"))
    result = K8S.launch(context, job)
    call = _FakeK8sClient.calls[-1]
    assert call["base_pod_spec"] == K8S.pod_spec() and call["namespace"] == "default"
    assert call["extras"] == K8S.extras(job)
    assert (tmp_path / "work" / "c1" / "nemo_data" / "training.jsonl").is_file()
    assert (tmp_path / "work" / "c1" / "nemo_experiment").is_dir()
    assert result.metadata["steps"] == 20
    assert result.metadata["nemo_source_examples"] == 10


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, "LocalPeftLauncher"),
        ({"FLYWHEEL_FINETUNE": "local"}, "LocalPeftLauncher"),
        (
            {"FLYWHEEL_FINETUNE": "nemo-subprocess", "FLYWHEEL_NEMO_PYTHON": "/v/bin/python"},
            "NemoSubprocessLauncher",
        ),
        ({"FLYWHEEL_FINETUNE": "nemo-k8s", "FLYWHEEL_K8S_PVC": "home"}, "NemoK8sLauncher"),
        (
            {
                "FLYWHEEL_FINETUNE": "nemo-ecs",
                "FLYWHEEL_ECS_CLUSTER": "c",
                "FLYWHEEL_ECS_TASK_DEFINITION": "t",
                "FLYWHEEL_ECS_SUBNETS": "s1, s2",
            },
            "NemoEcsLauncher",
        ),
    ],
)
def test_flywheel_finetune_chooses_the_launcher(tmp_path, env, kind):
    from flywheel_assets.environments import finetune_resource

    assert type(finetune_resource(env, tmp_path)).__name__ == kind


def test_the_k8s_launcher_maps_the_flywheel_home_onto_the_volume(tmp_path):
    from flywheel_assets.environments import finetune_resource

    env = {"FLYWHEEL_FINETUNE": "nemo-k8s", "FLYWHEEL_K8S_PVC": "home", "FLYWHEEL_NEMO_GPUS": "8"}
    launcher = finetune_resource(env, tmp_path)
    assert launcher.path_map == {str(tmp_path): "/flywheel"} and launcher.gpus == 8
    assert launcher.extras(_job(tmp_path))["job"]["output_dir"] == "/flywheel/work/c1/adapter"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLYWHEEL_FINETUNE": "nemo"}, "expected local or one of"),
        ({"FLYWHEEL_FINETUNE": "nemo-subprocess"}, "needs FLYWHEEL_NEMO_PYTHON"),
        ({"FLYWHEEL_FINETUNE": "nemo-ecs", "FLYWHEEL_ECS_CLUSTER": "c"}, "TASK_DEFINITION"),
    ],
)
def test_a_bad_finetune_setting_fails_at_load_with_its_reason(tmp_path, env, message):
    from flywheel_assets.environments import finetune_resource

    with pytest.raises(ValueError, match=message):
        finetune_resource(env, tmp_path)


def test_the_definitions_load_with_a_nemo_launcher(tmp_path):
    from flywheel_assets.definitions import build_definitions

    env = {"FLYWHEEL_FINETUNE": "nemo-subprocess", "FLYWHEEL_NEMO_PYTHON": "/v/bin/python"}
    defs = build_definitions(env=env, home=tmp_path)
    defs.resolve_job_def("flywheel_cycle")
    assert isinstance(defs.resources["finetune"], NemoSubprocessLauncher)


def _curriculum(job: FineTuneJob, n: int = 10) -> None:
    Path(job.examples_path).parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"code": f"x={i}", "review": f"r{i}", "severity": "minor", "weight": 1.0} for i in range(n)
    ]
    Path(job.examples_path).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_checkpoints_survive_a_rerun_of_the_same_job_and_not_a_changed_one(tmp_path):
    context = SimpleNamespace(log=logging.getLogger("test"))
    job = _job(tmp_path)
    _curriculum(job)
    K8S.prepare(context, job)
    checkpoint = tmp_path / "work" / "c1" / "nemo_experiment" / "checkpoints" / "epoch_0_step_9"
    checkpoint.mkdir(parents=True)
    K8S.prepare(context, job)  # e.g. after the pod was killed: resume
    assert checkpoint.is_dir()
    K8S.prepare(context, job.model_copy(update={"max_steps": 40}))
    assert not checkpoint.exists()
    checkpoint.mkdir(parents=True)
    _curriculum(job, n=11)  # new data, same settings
    K8S.prepare(context, job)
    assert not checkpoint.exists()


def test_the_subprocess_gets_the_nemo_env_not_the_orchestrators_venv(tmp_path, monkeypatch):
    calls = []

    class FakeSubprocessClient:
        def run(self, **kwargs):
            calls.append(kwargs)
            return SimpleNamespace(get_materialize_result=lambda: dg.MaterializeResult())

    monkeypatch.setattr(dg, "PipesSubprocessClient", FakeSubprocessClient)
    monkeypatch.setenv("PYTHONPATH", "/orchestrator/site-packages")
    monkeypatch.setenv("VIRTUAL_ENV", "/orchestrator/venv")
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    launcher = NemoSubprocessLauncher(python_executable=str(python))
    job = _job(tmp_path)
    _curriculum(job)
    launcher.launch(SimpleNamespace(log=logging.getLogger("test")), job)
    env = calls[-1]["env"]
    assert calls[-1]["command"] == [str(python), *ENTRY]
    assert env["PYTHONPATH"] == str(PROJECT_ROOT) and "VIRTUAL_ENV" not in env
    assert calls[-1]["extras"] == launcher.extras(job)
