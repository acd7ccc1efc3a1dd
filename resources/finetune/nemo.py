"""NeMo fine-tune launchers: the same FineTuneJob, run by the NeMo AutoModel LoRA recipe.

nemo_automodel (with its own transformers and triton pins) cannot live in the orchestrator's
venv, so every launcher starts ``python -m flywheel_assets.external.nemo_automodel_lora`` in a
NeMo environment through Dagster Pipes:

- ``NemoSubprocessLauncher``: a local NeMo venv (``scripts/build_nemo_venv.sh``), GPU
  workstation or CPU (``PipesSubprocessClient``);
- ``NemoK8sLauncher``: a pod from the NeMo AutoModel image (``docker/nemo-automodel.Dockerfile``)
  requesting ``nvidia.com/gpu`` (``PipesK8sClient`` from dagster-k8s);
- ``NemoEcsLauncher``: an ECS task on GPU container instances (dagster-aws ``PipesECSClient``).

Before launching, the orchestrator writes the curriculum as the recipe's task rows
(``flywheel_core.ml.nemo_data``) next to it; the job and the NeMo options travel as the
Pipes extras ``job`` and ``nemo``. The runner must see the flywheel home (curriculum and base
model in, adapter out) on a shared volume; ``path_map`` rewrites local path prefixes to where
the runner mounts it. The pure builders (``command``, ``pod_spec``, ``run_task_params``,
``extras``) do no I/O, so the exact process, pod and task are tested without a cluster or AWS.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from flywheel_core.ml.finetune_job import FineTuneJob
from flywheel_core.ml.nemo_data import (
    DEFAULT_REPEAT_SCALE,
    TRAINING_FILE,
    VALIDATION_FILE,
    write_nemo_dataset,
)
from flywheel_core.ml.nemo_options import NemoOptions
from flywheel_core.processes import launcher_env
from resources.finetune.launcher import FineTuneLauncher

ENTRY_MODULE = "flywheel_assets.external.nemo_automodel_lora"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Built from docker/nemo-automodel.Dockerfile (this project + dagster-pipes on the NeMo
# AutoModel container) and pushed to your registry; not a public image.
DEFAULT_IMAGE = "flywheel-nemo-automodel:0.7.0"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
_PATH_FIELDS = (
    "base_model_path",
    "examples_path",
    "output_dir",
    "init_adapter_dir",
    "checkpoint_dir",
)
# Variables of the orchestrator's venv that would break the NeMo interpreter.
_ORCHESTRATOR_ONLY_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
FINGERPRINT_FILE = "flywheel_fingerprint.txt"


def map_path(path: str, path_map: Mapping[str, str]) -> str:
    """``path`` with its longest matching prefix (whole path components) rewritten."""
    for local in sorted(path_map, key=len, reverse=True):
        root = local.rstrip("/")
        if path == root or path.startswith(root + "/"):
            return path_map[local].rstrip("/") + path[len(root) :]
    return path


def nemo_dataset_root(job: FineTuneJob) -> Path:
    return Path(job.examples_path).parent / "nemo_data"


def nemo_experiment_dir(job: FineTuneJob) -> Path:
    """The recipe's checkpoints sit beside the adapter dir (which the asset clears), so a re-run
    resumes."""
    return Path(job.output_dir).parent / "nemo_experiment"


def run_fingerprint(extras: Mapping[str, Any], dataset_root: Path) -> str:
    """sha256 of what a NeMo run depends on: the job, the NeMo options and the dataset files."""
    digest = hashlib.sha256(json.dumps(extras, sort_keys=True).encode())
    for name in (TRAINING_FILE, VALIDATION_FILE):
        digest.update((Path(dataset_root) / name).read_bytes())
    return digest.hexdigest()


def reset_stale_experiment(experiment_dir: Path, fingerprint: str) -> bool:
    """Keep NeMo's checkpoints only for the same run: a re-run after a crash resumes from them,
    a re-run with other settings or data starts over. True when old checkpoints were cleared."""
    marker = Path(experiment_dir) / FINGERPRINT_FILE
    used = Path(experiment_dir).is_dir() and any(Path(experiment_dir).iterdir())
    stale = used and (not marker.is_file() or marker.read_text().strip() != fingerprint)
    if stale:
        shutil.rmtree(experiment_dir)
    Path(experiment_dir).mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint + "\n")
    return stale


class NemoLauncher(FineTuneLauncher):
    """Settings shared by the NeMo launchers; subclasses choose where the process runs. The
    LoRA hyperparameters and the base model are the job's (the `training` settings and the
    student), exactly as for the PEFT launcher."""

    gpus: int = 1  # torchrun processes per node (one per GPU; 1 on a CPU)
    device: str = "auto"  # auto: CUDA when the runner's torch sees one, else CPU
    recipe: str | None = None  # a YAML merged over the generated recipe (runner's path)
    overrides: list[str] = Field(default_factory=list)  # dotlist over the recipe
    val_every_steps: int = 0  # validation loss every N steps (0 = at the end)
    adapter_name: str = "severity"
    validation_fraction: float = 0.1
    repeat_scale: float = DEFAULT_REPEAT_SCALE
    path_map: dict[str, str] = Field(default_factory=dict)  # local prefix -> runner's prefix
    project_path: str | None = None  # where the runner finds this project (PYTHONPATH)
    env: dict[str, str] = Field(default_factory=dict)  # extra env for the runner

    def options(self, job: FineTuneJob) -> NemoOptions:
        return NemoOptions(
            dataset_root=map_path(str(nemo_dataset_root(job)), self.path_map),
            experiment_dir=map_path(str(nemo_experiment_dir(job)), self.path_map),
            adapter_name=self.adapter_name,
            device=self.device,
            nproc_per_node=self.gpus,
            val_every_steps=self.val_every_steps,
            recipe=self.recipe,
            overrides=tuple(self.overrides),
        )

    def extras(self, job: FineTuneJob) -> dict[str, Any]:
        """The Pipes extras: the job (paths as the runner sees them) and the NeMo options."""
        remote = job.model_dump()
        for key in _PATH_FIELDS:
            if remote.get(key):
                remote[key] = map_path(remote[key], self.path_map)
        return {"job": remote, "nemo": self.options(job).to_dict()}

    def runner_env(self) -> dict[str, str]:
        """Environment of the NeMo process (Pipes adds its own variables)."""
        env = {"TOKENIZERS_PARALLELISM": "false"}
        if self.project_path:
            env["PYTHONPATH"] = self.project_path
        return {**env, **self.env}

    def prepare(self, context: dg.AssetExecutionContext, job: FineTuneJob) -> dict[str, Any]:
        """Write the NeMo dataset next to the curriculum; returns its summary as metadata."""
        summary = write_nemo_dataset(
            Path(job.examples_path),
            nemo_dataset_root(job),
            self.validation_fraction,
            self.repeat_scale,
            job.seed,
            job.explanation_weight,
        )
        context.log.info(
            f"NeMo dataset: {summary.training_rows} training rows (weights as repetitions), "
            f"{summary.validation_rows} validation rows in {summary.dataset_root}"
        )
        fingerprint = run_fingerprint(self.extras(job), nemo_dataset_root(job))
        if reset_stale_experiment(nemo_experiment_dir(job), fingerprint):
            context.log.info("settings or data changed since the last NeMo run: starting over")
        return {**summary.as_metadata(), "nemo_run_fingerprint": fingerprint[:16]}

    def launch(self, context: dg.AssetExecutionContext, job: FineTuneJob) -> dg.MaterializeResult:
        self.check_ready()
        data_metadata = self.prepare(context, job)
        invocation = self.run_pipes(context, job)
        reported = invocation.get_materialize_result()
        return dg.MaterializeResult(metadata={**(reported.metadata or {}), **data_metadata})

    def check_ready(self) -> None:
        """Fail before any work when the runner cannot start; subclasses override."""

    def run_pipes(self, context: dg.AssetExecutionContext, job: FineTuneJob) -> Any:
        raise NotImplementedError


class NemoSubprocessLauncher(NemoLauncher):
    """A local NeMo venv (``scripts/build_nemo_venv.sh``): the recipe in a subprocess."""

    python_executable: str  # e.g. <checkout>/.venv-nemo/bin/python
    cuda_visible_devices: str | None = None
    project_path: str | None = str(PROJECT_ROOT)

    def command(self) -> list[str]:
        return [self.python_executable, "-m", ENTRY_MODULE]

    def runner_env(self) -> dict[str, str]:
        env = {**super().runner_env(), **launcher_env()}  # the runner dies with this process
        if self.cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices
        return env

    def check_ready(self) -> None:
        exe = Path(self.python_executable)
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise dg.Failure(
                f"NeMo python {self.python_executable!r} does not exist or is not executable: "
                "build the NeMo venv (make nemo-venv; docs/fine-tuning.md) and point "
                "FLYWHEEL_NEMO_PYTHON at its bin/python"
            )

    def run_pipes(self, context: dg.AssetExecutionContext, job: FineTuneJob) -> Any:
        base = {k: v for k, v in os.environ.items() if k not in _ORCHESTRATOR_ONLY_ENV}
        return dg.PipesSubprocessClient().run(
            command=self.command(),
            context=context,
            extras=self.extras(job),
            env={**base, **self.runner_env()},
        )


class NemoK8sLauncher(NemoLauncher):
    """A Kubernetes pod from the NeMo AutoModel image, on a GPU node."""

    image: str = DEFAULT_IMAGE  # docker/nemo-automodel.Dockerfile, pushed to your registry
    python: str = "python"
    namespace: str = "default"
    volume_claim: str | None = None  # PVC holding the flywheel home (curriculum in, adapter out)
    mount_path: str = "/flywheel"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=lambda: [dict(GPU_TOLERATION)])
    env_secret: str | None = None  # a Secret whose keys become env (e.g. HF_TOKEN)
    shm_size: str = "16Gi"  # PyTorch data loaders need a large /dev/shm
    service_account: str | None = None
    load_incluster_config: bool | None = None
    kubeconfig_file: str | None = None

    def command(self) -> list[str]:
        return [self.python, "-m", ENTRY_MODULE]

    def pod_spec(self) -> dict[str, Any]:
        """The pod spec (camelCase, as kubectl takes it); Pipes adds its env and metadata."""
        gpus = str(self.gpus)
        container: dict[str, Any] = {
            "name": "nemo",
            "image": self.image,
            "command": self.command(),
            "env": [{"name": k, "value": v} for k, v in sorted(self.runner_env().items())],
            "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}},
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        }
        volumes: list[dict[str, Any]] = [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": self.shm_size}}
        ]
        if self.volume_claim:
            container["volumeMounts"].append({"name": "flywheel", "mountPath": self.mount_path})
            volumes.append(
                {"name": "flywheel", "persistentVolumeClaim": {"claimName": self.volume_claim}}
            )
        if self.env_secret:
            container["envFrom"] = [{"secretRef": {"name": self.env_secret}}]
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": volumes,
            "tolerations": [dict(t) for t in self.tolerations],
        }
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        if self.service_account:
            spec["serviceAccountName"] = self.service_account
        return spec

    def run_pipes(self, context: dg.AssetExecutionContext, job: FineTuneJob) -> Any:
        try:
            from dagster_k8s import PipesK8sClient
        except ImportError as error:  # pragma: no cover - dagster-k8s is a dependency
            raise dg.Failure(
                "NemoK8sLauncher needs dagster-k8s (pip install dagster-k8s)"
            ) from error
        client = PipesK8sClient(
            load_incluster_config=self.load_incluster_config,
            kubeconfig_file=self.kubeconfig_file,
        )
        return client.run(
            context=context,
            extras=self.extras(job),
            namespace=self.namespace,
            base_pod_spec=self.pod_spec(),
        )


class NemoEcsLauncher(NemoLauncher):
    """An ECS task on GPU container instances (EC2 launch type: Fargate has no GPUs)."""

    cluster: str
    task_definition: str  # family[:revision] or ARN: the NeMo AutoModel image, EFS, awslogs
    container_name: str = "nemo"
    python: str = "python"
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    assign_public_ip: bool = False
    capacity_provider: str | None = None  # a GPU auto-scaling group's provider; else EC2
    region_name: str | None = None

    def command(self) -> list[str]:
        return [self.python, "-m", ENTRY_MODULE]

    def run_task_params(self) -> dict[str, Any]:
        """``ecs.run_task`` arguments; Pipes adds its env to the container override."""
        override = {
            "name": self.container_name,
            "command": self.command(),
            "environment": [{"name": k, "value": v} for k, v in sorted(self.runner_env().items())],
            "resourceRequirements": [{"type": "GPU", "value": str(self.gpus)}],
        }
        params: dict[str, Any] = {
            "cluster": self.cluster,
            "taskDefinition": self.task_definition,
            "count": 1,
            "overrides": {"containerOverrides": [override]},
        }
        if self.capacity_provider:
            params["capacityProviderStrategy"] = [
                {"capacityProvider": self.capacity_provider, "weight": 1}
            ]
        else:
            params["launchType"] = "EC2"
        if self.subnets:
            params["networkConfiguration"] = {
                "awsvpcConfiguration": {
                    "subnets": list(self.subnets),
                    "securityGroups": list(self.security_groups),
                    "assignPublicIp": "ENABLED" if self.assign_public_ip else "DISABLED",
                }
            }
        return params

    def run_pipes(self, context: dg.AssetExecutionContext, job: FineTuneJob) -> Any:
        import boto3
        from dagster_aws.pipes import PipesECSClient

        client = PipesECSClient(client=boto3.client("ecs", region_name=self.region_name))
        return client.run(
            context=context,
            run_task_params=self.run_task_params(),
            extras=self.extras(job),
            pipes_container_name=self.container_name,
        )


NEMO_LAUNCHERS = ("nemo-subprocess", "nemo-k8s", "nemo-ecs")


def _required(env: Mapping[str, str], name: str, kind: str) -> str:
    value = env.get(name)
    if not value:
        raise ValueError(f"FLYWHEEL_FINETUNE={kind} needs {name} (see docs/fine-tuning.md)")
    return value


def _common(env: Mapping[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {"gpus": int(env.get("FLYWHEEL_NEMO_GPUS", "1"))}
    if env.get("FLYWHEEL_NEMO_RECIPE"):
        settings["recipe"] = env["FLYWHEEL_NEMO_RECIPE"]
    return settings


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def nemo_launcher(kind: str, env: Mapping[str, str], home: Path) -> NemoLauncher:
    """The NeMo launcher for FLYWHEEL_FINETUNE=``kind``, configured from FLYWHEEL_* variables."""
    common = _common(env)
    if kind == "nemo-subprocess":
        python = _required(env, "FLYWHEEL_NEMO_PYTHON", kind)
        return NemoSubprocessLauncher(python_executable=python, **common)
    if kind == "nemo-k8s":
        mount = env.get("FLYWHEEL_K8S_MOUNT", "/flywheel")
        return NemoK8sLauncher(
            image=env.get("FLYWHEEL_NEMO_IMAGE", DEFAULT_IMAGE),
            namespace=env.get("FLYWHEEL_K8S_NAMESPACE", "default"),
            volume_claim=_required(env, "FLYWHEEL_K8S_PVC", kind),
            mount_path=mount,
            path_map={str(home): mount},
            env_secret=env.get("FLYWHEEL_K8S_ENV_SECRET") or None,
            node_selector=_labels(env.get("FLYWHEEL_K8S_NODE_SELECTOR")),
            **common,
        )
    if kind == "nemo-ecs":
        return NemoEcsLauncher(
            cluster=_required(env, "FLYWHEEL_ECS_CLUSTER", kind),
            task_definition=_required(env, "FLYWHEEL_ECS_TASK_DEFINITION", kind),
            subnets=_csv(env.get("FLYWHEEL_ECS_SUBNETS")),
            security_groups=_csv(env.get("FLYWHEEL_ECS_SECURITY_GROUPS")),
            capacity_provider=env.get("FLYWHEEL_ECS_CAPACITY_PROVIDER") or None,
            path_map=_path_map(env.get("FLYWHEEL_ECS_MOUNT"), home),
            **common,
        )
    raise ValueError(f"FLYWHEEL_FINETUNE={kind!r}: expected local or one of {NEMO_LAUNCHERS}")


def _labels(value: str | None) -> dict[str, str]:
    """`key=value,key2=value2` (FLYWHEEL_K8S_NODE_SELECTOR, e.g. nvidia.com/gpu.present=true)."""
    pairs = [part.split("=", 1) for part in _csv(value)]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"FLYWHEEL_K8S_NODE_SELECTOR={value!r}: expected key=value[,key=value]")
    return dict(pairs)


def _path_map(mount: str | None, home: Path) -> dict[str, str]:
    return {str(home): mount} if mount else {}
