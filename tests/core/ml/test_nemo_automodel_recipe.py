"""Protects the NeMo AutoModel recipe YAML: generated from the same job settings as the PEFT
recipe, gloo + fp32 on CPU and NCCL + bf16 on CUDA, warm start shape, overrides last."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from flywheel_core.ml.finetune_job import FineTuneJob
from flywheel_core.ml.nemo_automodel_recipe import (
    adapter_lora,
    automodel_config,
    lora_patterns,
    trained_layers,
)
from flywheel_core.ml.nemo_options import NemoOptions
from flywheel_core.ml.recipe import load_recipe

OPTIONS = NemoOptions(dataset_root="/d", experiment_dir="/e")


def _job(tmp_path, **update) -> dict:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    job = FineTuneJob(
        base_model_path=str(model),
        examples_path="/w/curriculum.jsonl",
        output_dir="/w/adapter",
        max_steps=20,
        max_prompt_tokens=192,
        num_threads=1,
        learning_rate=2e-4,
        batch_size=8,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        layers_to_train=None,
        seed=3,
    )
    return {**job.model_dump(), **update}


def test_the_job_settings_become_the_recipe(tmp_path):
    job = _job(tmp_path)
    config = automodel_config(job, OPTIONS, "cpu")
    peft_recipe = load_recipe()
    assert config["model"]["pretrained_model_name_or_path"] == job["base_model_path"]
    assert config["peft"]["dim"] == 8 and config["peft"]["alpha"] == 16
    assert config["peft"]["dropout"] == 0.05 and config["peft"]["dropout_position"] == "pre"
    assert config["peft"]["target_modules"] == [f"*.{m}" for m in peft_recipe["target_modules"]]
    assert config["optimizer"]["lr"] == 2e-4
    assert config["optimizer"]["weight_decay"] == peft_recipe["weight_decay"]
    assert config["lr_scheduler"]["lr_warmup_steps"] == peft_recipe["warmup_steps"]
    assert config["clip_grad_norm"]["max_norm"] == peft_recipe["max_grad_norm"]
    scheduler = config["step_scheduler"]
    assert scheduler["max_steps"] == 20 and scheduler["global_batch_size"] == 8
    assert scheduler["local_batch_size"] == 8 and scheduler["ckpt_every_steps"] == 10
    assert config["seed"] == config["rng"]["seed"] == 3
    for key, name in (("dataset", "training.jsonl"), ("validation_dataset", "validation.jsonl")):
        dataset = config[key]
        assert dataset["_target_"] == "flywheel_core.ml.nemo_data.sft_dataset"
        assert dataset["path_or_dataset_id"] == f"/d/{name}"
        assert dataset["max_prompt_tokens"] == 192 and dataset["max_explanation_tokens"] == 96
        assert dataset["loss"] == job["loss"] == "label"  # training.loss, as for PEFT
        assert dataset["tokenizer"]["pretrained_model_name_or_path"] == job["base_model_path"]
    assert config["checkpoint"]["checkpoint_dir"] == "/e/checkpoints"
    assert config["checkpoint"]["save_consolidated"] is False
    yaml.safe_load(yaml.safe_dump(config))  # written as YAML


@pytest.mark.parametrize(
    ("device", "native_bf16", "setting", "backend", "dtype", "triton"),
    [
        ("cpu", False, "auto", "gloo", "float32", False),
        ("cpu", True, "auto", "gloo", "bfloat16", False),
        ("cpu", True, "float32", "gloo", "float32", False),
        ("cuda", False, "auto", "nccl", "bfloat16", True),
        ("cuda", False, "float32", "nccl", "float32", True),
    ],
)
def test_the_machine_and_the_dtype_setting_pick_backend_and_precision(
    tmp_path, device, native_bf16, setting, backend, dtype, triton
):
    job = _job(tmp_path, dtype=setting)
    config = automodel_config(job, OPTIONS, device, native_bf16=native_bf16)
    assert config["dist_env"]["backend"] == backend
    policy = config["distributed"]["mp_policy"]
    assert policy["param_dtype"] == dtype and policy["reduce_dtype"] == "float32"
    assert config["peft"]["use_triton"] is triton
    assert config["model"]["torch_dtype"] == "float32"


def test_top_layers_only_and_several_processes(tmp_path):
    config = automodel_config(_job(tmp_path, layers_to_train=2), OPTIONS, "cuda", world_size=4)
    assert config["peft"]["target_modules"][0] == "*.layers.2.*.q_proj"
    assert {p.split(".")[2] for p in config["peft"]["target_modules"]} == {"2", "3"}
    assert config["step_scheduler"]["local_batch_size"] == 2
    with pytest.raises(ValueError, match="not divisible"):
        automodel_config(_job(tmp_path), OPTIONS, "cuda", world_size=3)


def test_trained_layers_and_patterns():
    assert trained_layers(None, 30) is None and trained_layers(40, 30) is None
    assert trained_layers(2, 30) == [28, 29] and trained_layers(2, None) is None
    assert lora_patterns(["q_proj"], None) == ["*.q_proj"]
    patterns = lora_patterns(["q_proj", "v_proj"], [1])
    assert patterns == ["*.layers.1.*.q_proj", "*.layers.1.*.v_proj"]


def test_a_warm_start_takes_the_previous_adapters_shape(tmp_path):
    previous = {
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["model.layers.3.self_attn.q_proj", "model.layers.3.mlp.down_proj"],
    }
    config = automodel_config(_job(tmp_path), OPTIONS, "cpu", init_adapter=previous)
    assert config["peft"]["dim"] == 4 and config["peft"]["alpha"] == 8
    assert config["peft"]["target_modules"] == ["*.layers.3.*.down_proj", "*.layers.3.*.q_proj"]
    # A PEFT-recipe adapter: short names plus layers_to_transform.
    peft_style = {"r": 16, "lora_alpha": 32, "target_modules": ["v_proj"], "layers_to_transform": 5}
    assert adapter_lora(peft_style)["target_modules"] == ["*.layers.5.*.v_proj"]


def test_recipe_file_then_overrides_win(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("step_scheduler:\n  local_batch_size: 4\npeft:\n  use_triton: true\n")
    options = NemoOptions(
        dataset_root="/d",
        experiment_dir="/e",
        recipe=str(recipe),
        overrides=("step_scheduler.local_batch_size=2", "model.force_hf=false"),
    )
    config = automodel_config(_job(tmp_path, max_grad_norm=None), options, "cpu")
    assert config["step_scheduler"]["local_batch_size"] == 2
    assert config["step_scheduler"]["max_steps"] == 20  # merged, not replaced
    assert config["peft"]["use_triton"] is True and config["model"]["force_hf"] is False
    assert math.isinf(config["clip_grad_norm"]["max_norm"])  # PEFT's null = no clipping
    with pytest.raises(FileNotFoundError):
        automodel_config(_job(tmp_path), NemoOptions("/d", "/e", recipe="/nope.yaml"), "cpu")


def test_options_round_trip_through_the_pipes_extra():
    options = NemoOptions("/d", "/e", nproc_per_node=8, overrides=("a.b=1",))
    assert NemoOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    with pytest.raises(ValueError, match="device"):
        NemoOptions("/d", "/e", device="tpu")


def test_without_a_validation_split_the_recipe_has_no_validation(tmp_path):
    config = automodel_config(_job(tmp_path), OPTIONS, "cpu", validation=False)
    assert "validation_dataset" not in config and "validation_dataloader" not in config
    assert config["step_scheduler"]["val_every_steps"] is None
