"""Protects the NeMo AutoModel fine-tune end to end: real flywheel cycles with
FLYWHEEL_FINETUNE=nemo-subprocess, where nemo_automodel's stock LLM recipe trains the LoRA through
torchrun in .venv-nemo (CPU here: gloo, with the TEST-ONLY CUDA shim; CUDA in the gpu
test), and the adapter goes through the same store -> held-out evaluation -> gate -> deployment
as a PEFT one. Skipped only when the NeMo venv cannot be built (the reason is shown)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from flywheel_assets.external.nemo_automodel_lora import read_jsonl
from flywheel_core.hashing import sha256_dir
from tests.conftest import TINY_OVERRIDES
from tests.support.flywheel_runner import latest_metadata, run_cycles
from tests.support.nemo_venv import REPO, ensure_nemo_venv, wrapper_python

pytestmark = pytest.mark.nemo
KEYS = ["bootstrap", "cycle-2"]
STEPS = 6  # training.steps_per_cycle in TINY_OVERRIDES


@pytest.fixture(scope="module")
def nemo_venv_python():
    python, reason = ensure_nemo_venv()
    if python is None:
        pytest.skip(f"the NeMo AutoModel venv cannot be built here: {reason}")
    return python


def _nemo_env(cache_dir: Path, python: Path) -> dict[str, str]:
    return {
        "FLYWHEEL_ENV": "local",
        "FLYWHEEL_CACHE": str(cache_dir),
        "FLYWHEEL_FINETUNE": "nemo-subprocess",
        "FLYWHEEL_NEMO_PYTHON": str(python),
    }


@pytest.fixture(scope="module")
def nemo_cycles(tmp_path_factory, cache_dir, nemo_venv_python):
    home = tmp_path_factory.mktemp("flywheel-nemo")
    python = wrapper_python(home / "bin", nemo_venv_python, cpu_shim=True)
    defs, instance = run_cycles(home, _nemo_env(cache_dir, python), KEYS, TINY_OVERRIDES)
    return home, defs.resources["store"], instance


def _adapters(store) -> dict[str, dict]:
    rows = store.query("SELECT * FROM adapters").iter_rows(named=True)
    return {row["cycle"]: row for row in rows}


def _adapter_path(row: dict) -> Path:
    return Path(row["uri"].removeprefix("file://"))


def test_the_recipe_trains_every_step_and_reports_through_pipes(nemo_cycles):
    _, _, instance = nemo_cycles
    for cycle in KEYS:
        meta = latest_metadata(instance, "lora_adapter", cycle)
        assert meta["runner"] == "nemo-automodel"
        assert meta["recipe"].endswith("TrainFinetuneRecipeForNextTokenPrediction")
        assert meta["device"] == "cpu" and meta["steps"] == STEPS
        curve = meta["loss_curve"]
        assert [point["step"] for point in curve] == list(range(1, STEPS + 1))
        assert all(0 < point["loss"] < 20 for point in curve)
        assert meta["final_loss"] == curve[-1]["loss"]
        assert meta["nemo_training_rows"] > 0 and meta["nemo_validation_rows"] > 0
        assert meta["seconds_per_step"] > 0
    messages = [
        entry.user_message
        for run in instance.get_runs()
        for entry in instance.all_logs(run.run_id)
        if entry.user_message
    ]
    assert any(f"step {STEPS}/{STEPS} loss" in m for m in messages)


def test_the_adapter_is_hf_peft_and_stored_content_addressed(nemo_cycles):
    _, store, _ = nemo_cycles
    for row in _adapters(store).values():
        path = _adapter_path(row)
        assert sha256_dir(path) == row["adapter_sha256"] == path.name
        config = json.loads((path / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 32
        with safe_open(str(path / "adapter_model.safetensors"), "pt") as weights:
            keys = list(weights.keys())
            assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
            trained = [weights.get_tensor(k) for k in keys if ".lora_B." in k]
        assert len(keys) == 2 * len(config["target_modules"]) == 28
        assert any(float(t.abs().sum()) > 0 for t in trained)  # B starts at 0: it trained


def test_the_second_cycle_warm_starts_from_the_first_adapter(nemo_cycles):
    _, store, instance = nemo_cycles
    adapters = _adapters(store)
    assert adapters["bootstrap"]["init_adapter_sha256"] is None
    assert adapters["cycle-2"]["init_adapter_sha256"] == adapters["bootstrap"]["adapter_sha256"]
    meta = latest_metadata(instance, "lora_adapter", "cycle-2")
    assert meta["warm_start_from_cycle"] == "bootstrap" and meta["warm_start"] != "none"
    assert meta["warm_start_tensors"] == 28  # every LoRA A and B of the 14 modules, loaded
    assert "warm_start_tensors" not in latest_metadata(instance, "lora_adapter", "bootstrap")
    assert adapters["cycle-2"]["adapter_sha256"] != adapters["bootstrap"]["adapter_sha256"]


def test_heldout_evaluation_scores_the_nemo_adapter_with_the_student(nemo_cycles):
    _, store, instance = nemo_cycles
    adapters = _adapters(store)
    for cycle in KEYS:
        results = store.query(f"SELECT * FROM heldout_results WHERE cycle = '{cycle}'")
        candidate = results.filter(results["role"] == "candidate").row(0, named=True)
        assert candidate["model_ref"] == f"adapter:{adapters[cycle]['adapter_sha256']}"
        meta = latest_metadata(instance, "heldout_evaluation", cycle)
        assert meta["heldout_items"] == 24 and 0.0 <= meta["candidate accuracy (%)"] <= 100.0


def test_the_gate_passes_and_triton_serves_the_nemo_adapter(nemo_cycles):
    home, store, instance = nemo_cycles
    adapters = _adapters(store)
    deployments = store.query("SELECT * FROM deployments ORDER BY model_version")
    assert deployments["cycle"].to_list() == KEYS  # the blocking gate let both through
    for cycle, sha in zip(KEYS, deployments["adapter_sha256"].to_list(), strict=True):
        assert sha == adapters[cycle]["adapter_sha256"]
        deployed = latest_metadata(instance, "deployed_student", cycle)
        assert deployed["deployed"] is True and deployed["adapter_sha256"] == sha
    version_dir = home / "triton_repository" / "flywheel_student" / "2"
    published = version_dir / "adapter" / "adapter_model.safetensors"
    assert (
        published.read_bytes()
        == (_adapter_path(adapters["cycle-2"]) / "adapter_model.safetensors").read_bytes()
    )


def _curriculum(path: Path, n: int) -> None:
    labels = ("critical", "major", "minor", "trivial")
    rows = [
        {
            "code": f"def f{i}(items):\n    return items[{i}]",
            "review": f"finding {i}: index {i} may be out of range",
            "severity": labels[i % 4],
            "weight": 1.0,
            "explanation": f"Reason {i}." if i % 2 else None,
        }
        for i in range(n)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.slow
def test_smollm2_trains_a_few_steps_through_the_nemo_recipe(tmp_path, cache_dir, nemo_venv_python):
    """The real student through the entry point alone (no whole cycle: minutes saved): 3 steps,
    LoRA on the top 12 of 30 layers (training.layers_to_train), an adapter the student rates
    with."""
    from flywheel_core.ml.base_model import resolve_base_model
    from flywheel_core.ml.finetune_job import FineTuneJob
    from flywheel_core.ml.nemo_data import write_nemo_dataset
    from flywheel_core.ml.nemo_options import NemoOptions
    from flywheel_core.ml.student import Student
    from flywheel_core.settings import StudentSettings, TrainingSettings

    student = Student(StudentSettings(num_threads=2, max_prompt_tokens=192), cache_dir)
    work = tmp_path / "work"
    job = FineTuneJob(
        **TrainingSettings(batch_size=4).lora(),
        base_model_path=str(resolve_base_model("smollm2-135m-instruct", cache_dir)),
        examples_path=str(work / "curriculum.jsonl"),
        output_dir=str(work / "adapter"),
        max_steps=3,
        max_prompt_tokens=192,
        num_threads=2,
    )
    _curriculum(Path(job.examples_path), 16)
    write_nemo_dataset(Path(job.examples_path), work / "nemo_data", 0.1, 2.0, 0, 0.5)
    options = NemoOptions(str(work / "nemo_data"), str(work / "nemo_experiment"))
    (work / "job.json").write_text(job.model_dump_json())
    (work / "nemo.json").write_text(json.dumps(options.to_dict()))
    python = wrapper_python(tmp_path / "bin", nemo_venv_python, cpu_shim=True)
    command = [str(python), "-m", "flywheel_assets.external.nemo_automodel_lora"]
    command += ["--job", str(work / "job.json"), "--nemo", str(work / "nemo.json")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(command, env=env, check=True, timeout=1200)
    metrics = read_jsonl(work / "nemo_experiment" / "checkpoints" / "training.jsonl")
    assert [r["step"] for r in metrics] == [0, 1, 2]
    assert all(0 < r["loss"] < 20 for r in metrics)
    config = json.loads((work / "adapter" / "adapter_config.json").read_text())
    layers = {int(m.split(".layers.")[1].split(".")[0]) for m in config["target_modules"]}
    assert layers == set(range(18, 30)) and len(config["target_modules"]) == 12 * 7
    results, _ = student.rate([("x = [1][2]", "IndexError")], adapter_dir=work / "adapter")
    assert results[0]["severity"] in ("critical", "major", "minor", "trivial")


@pytest.mark.gpu
def test_one_cycle_on_cuda_with_nccl_and_bf16(tmp_path, cache_dir, nemo_venv_python):
    """The same cycle on a GPU: no shim, the recipe picks NCCL, bf16 and the Triton LoRA
    kernel. Needs a CUDA torch in .venv-nemo (scripts/device_check_nemo.sh builds one)."""
    assert torch.cuda.is_available()
    python = wrapper_python(tmp_path / "bin", nemo_venv_python, cpu_shim=False)
    env = _nemo_env(cache_dir, python)
    defs, instance = run_cycles(tmp_path, env, ["bootstrap"], TINY_OVERRIDES)
    meta = latest_metadata(instance, "lora_adapter", "bootstrap")
    assert meta["runner"] == "nemo-automodel" and meta["device"] == "cuda"
    assert meta["steps"] == STEPS
    recipe = (tmp_path / "work" / "bootstrap" / "nemo_experiment" / "recipe.yaml").read_text()
    assert "backend: nccl" in recipe and "param_dtype: bfloat16" in recipe
    assert latest_metadata(instance, "deployed_student", "bootstrap")["deployed"] is True
