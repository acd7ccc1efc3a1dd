"""Protects the NeMo entry point: recipe construction (where NeMo exists), NIM adapter layout."""

from __future__ import annotations

import json
import os
import time

import pytest

from flywheel_assets.external import nemo_lora

JOB = {
    "base_model_path": "/models/base",
    "examples_path": "/data/curriculum.jsonl",
    "output_dir": "/data/adapter",
    "init_adapter_dir": None,
    "learning_rate": 2e-4,
    "batch_size": 8,
    "max_steps": 20,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "layers_to_train": None,
    "max_prompt_tokens": 320,
    "seed": 0,
    "num_threads": 1,
}


def _hf_adapter(path, modules=("q_proj", "v_proj")):
    path.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 16, "target_modules": list(modules)}
    (path / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return path


def test_the_module_imports_without_nemo_or_dagster():
    """The NeMo venv has neither dagster nor this project's deps: top-level imports stay tiny."""
    source = nemo_lora.__file__
    with open(source, encoding="utf-8") as handle:
        top = [line for line in handle if line.startswith(("import ", "from "))]
    modules = {line.split()[1].split(".")[0] for line in top}
    assert modules <= {
        "__future__",
        "json",
        "logging",
        "os",
        "shutil",
        "time",
        "collections",
        "flywheel_core",
        "dataclasses",
        "pathlib",
        "typing",
    }


def test_options_round_trip_through_the_pipes_extra():
    options = nemo_lora.NemoOptions(dataset_root="/d", experiment_dir="/e", devices=4)
    again = nemo_lora.NemoOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert again == options


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("hf://meta-llama/Meta-Llama-3-8B-Instruct", "nemo://meta-llama/Meta-Llama-3-8B-Instruct"),
        ("nemo://meta-llama/Meta-Llama-3-8B", "nemo://meta-llama/Meta-Llama-3-8B"),
        ("/ckpt/llama3-8b", "/ckpt/llama3-8b"),
    ],
)
def test_restore_path_follows_import_ckpt_naming(base, expected):
    assert nemo_lora.restore_path(base) == expected


@pytest.mark.parametrize(
    ("base", "tokenizer", "expected"),
    [
        ("hf://meta-llama/Meta-Llama-3-8B-Instruct", None, "meta-llama/Meta-Llama-3-8B-Instruct"),
        (
            "nemo://meta-llama/Llama-3.2-1B",
            None,
            "/cache/meta-llama/Llama-3.2-1B/context/nemo_tokenizer",
        ),
        ("/ckpt/llama", None, "/ckpt/llama/context/nemo_tokenizer"),
        ("/ckpt/llama", "/tok", "/tok"),
    ],
)
def test_the_tokenizer_comes_from_the_base_model(base, tokenizer, expected):
    options = nemo_lora.NemoOptions(
        dataset_root="/d", experiment_dir="/e", base_model=base, tokenizer=tokenizer
    )
    assert nemo_lora.tokenizer_source(options, "/cache") == expected


def test_publish_for_nim_makes_one_directory_per_adapter(tmp_path):
    adapter = _hf_adapter(tmp_path / "adapter")
    target = nemo_lora.publish_for_nim(adapter, tmp_path / "loras", "severity-c3")
    assert target == tmp_path / "loras" / "severity-c3"
    assert sorted(p.name for p in target.iterdir()) == sorted(nemo_lora.HF_ADAPTER_FILES)


def test_an_adapter_nim_cannot_load_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "adapter_config.json").write_text("{}", encoding="utf-8")
        nemo_lora.check_nim_adapter(tmp_path / "a")
    bad = _hf_adapter(tmp_path / "b", modules=("linear_qkv",))
    with pytest.raises(ValueError, match="linear_qkv"):
        nemo_lora.check_nim_adapter(bad)


def test_last_checkpoint_is_the_newest_last_directory(tmp_path):
    ckpts = tmp_path / "severity" / "checkpoints"
    old = ckpts / "severity--reduced_train_loss=0.9-step=9-last"
    new = ckpts / "severity--reduced_train_loss=0.5-step=19-last"
    (ckpts / "severity--reduced_train_loss=0.5-step=19").mkdir(parents=True)
    old.mkdir()
    new.mkdir()
    stamp = time.time()
    os.utime(old, (stamp - 60, stamp - 60))
    assert nemo_lora.last_checkpoint(tmp_path) == new
    with pytest.raises(FileNotFoundError):
        nemo_lora.last_checkpoint(tmp_path / "nothing")


def test_only_rank_zero_talks_to_dagster():
    assert nemo_lora.is_rank_zero({})
    assert nemo_lora.is_rank_zero({"RANK": "0", "LOCAL_RANK": "0"})
    assert not nemo_lora.is_rank_zero({"RANK": "1"})
    assert not nemo_lora.is_rank_zero({"LOCAL_RANK": "3"})


def test_run_metadata_has_the_keys_the_asset_reads():
    options = nemo_lora.NemoOptions(dataset_root="/d", experiment_dir="/e")
    meta = nemo_lora.run_metadata([1.0, 0.5], JOB, options, {"target_modules": ["q_proj"]}, 12.3)
    assert meta["steps"] == 20 and meta["final_loss"] == 0.5 and meta["mean_loss"] == 0.75
    assert meta["adapter_format"] == "hf-peft"
    assert meta["nim_layout"].startswith("$NIM_PEFT_SOURCE/severity/")


@pytest.mark.nemo
def test_the_recipe_constructs_without_training(tmp_path):
    """Import + config only: no GPU, no checkpoint download."""
    pytest.importorskip("nemo.collections.llm")
    import torch
    from nemo.collections import llm

    options = nemo_lora.NemoOptions(
        dataset_root=str(tmp_path),
        experiment_dir=str(tmp_path / "e"),
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
    )
    recipe = nemo_lora.build_recipe(JOB, options)
    assert set(recipe) == {"model", "data", "trainer", "peft", "log", "optim", "resume", "progress"}
    assert isinstance(recipe["peft"], llm.peft.LoRA)
    assert recipe["peft"].dim == 16 and recipe["peft"].alpha == 32
    assert list(recipe["peft"].target_modules) == list(nemo_lora.DEFAULT_TARGET_MODULES)
    assert isinstance(recipe["data"], llm.FineTuningDataModule)
    assert recipe["data"].train_path == tmp_path / "e" / "sft_data" / "training.jsonl"
    assert recipe["data"].validation_path == tmp_path / "e" / "sft_data" / "validation.jsonl"
    assert recipe["data"].dataset_kwargs["prompt_template"] == "{input}{output}"
    assert recipe["data"].global_batch_size == 8
    assert recipe["trainer"].max_steps == 20
    assert recipe["progress"] in recipe["trainer"].callbacks
    assert recipe["resume"].restore_config.path == "nemo://meta-llama/Meta-Llama-3-8B-Instruct"
