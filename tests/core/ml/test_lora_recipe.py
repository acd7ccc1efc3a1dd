"""Protects the PEFT recipe: config file + overrides, exact crash resume, early stop, CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from flywheel_assets.external.train_lora import _LocalReporter, main, run_job
from flywheel_core.ml.base_model import load_tokenizer
from flywheel_core.ml.early_stopping import EarlyStopping, split_validation
from flywheel_core.ml.lora_training import (
    TrainConfig,
    _autocast,
    _loss_fn,
    build_peft_model,
    encode_examples,
    train_lora,
    validation_loss,
)
from flywheel_core.ml.recipe import DEFAULT_RECIPE, load_recipe, resolve_config
from tests.core.ml.test_lora_training import config, synthetic_examples, tiny_path  # noqa: F401

torch.set_num_threads(1)


class Crash(RuntimeError):
    pass


def _adapter_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter_model.safetensors"))


def test_recipe_file_validates_and_job_then_overrides_win(tmp_path: Path) -> None:
    assert set(load_recipe()) <= set(TrainConfig.model_fields)
    job = {"base_model_path": "m", "output_dir": "o", "examples_path": "e.jsonl", "lora_r": 4}
    cfg, examples = resolve_config(job, overrides=["lora_r=2", "learning_rate=1e-3"])
    assert examples == Path("e.jsonl")
    assert cfg.lora_r == 2 and cfg.learning_rate == 1e-3
    assert cfg.eval_every == load_recipe(DEFAULT_RECIPE)["eval_every"]  # from the file
    assert resolve_config(job)[0].lora_r == 4  # the job beats the file
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lora_r: 32\npatience: 7\n")
    cfg, _ = resolve_config({k: v for k, v in job.items() if k != "lora_r"}, recipe)
    assert (cfg.lora_r, cfg.patience) == (32, 7)
    with pytest.raises(ValidationError, match="learning_rat"):
        resolve_config(job, overrides=["learning_rat=1e-3"])


def test_cli_job_file_with_dotlist_overrides(
    tiny_path: Path,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    examples = tmp_path / "curriculum.jsonl"
    examples.write_text("\n".join(json.dumps(e) for e in synthetic_examples(8)) + "\n")
    job = config(tiny_path, tmp_path / "adapter").model_dump(mode="json")
    job["examples_path"] = str(examples)
    (tmp_path / "job.json").write_text(json.dumps(job))
    caplog.set_level("INFO")
    assert main(["--job", str(tmp_path / "job.json"), "max_steps=2", "learning_rate=1e-3"]) == 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert "step 2/2 loss" in caplog.text and "step 3/" not in caplog.text
    metadata = run_job(job, _LocalReporter(), overrides=["max_steps=1"])
    assert metadata["steps"] == 1 and metadata["resumed_from_step"] == 0


def test_same_seed_same_adapter(tiny_path: Path, tmp_path: Path) -> None:  # noqa: F811
    examples = synthetic_examples(12)
    for name in ("a", "b"):
        train_lora(config(tiny_path, tmp_path / name, max_steps=4, lora_dropout=0.1), examples)
    a, b = _adapter_weights(tmp_path / "a"), _adapter_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name])


def test_resumed_run_ends_like_an_uninterrupted_one(
    tiny_path: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    examples = synthetic_examples(60)
    common = {"max_steps": 10, "lora_dropout": 0.1, "eval_every": 3, "patience": 10}
    straight = train_lora(config(tiny_path, tmp_path / "straight", **common), examples)

    ckpt = tmp_path / "ckpt"
    cfg = config(tiny_path, tmp_path / "resumed", checkpoint_dir=ckpt, checkpoint_every=4, **common)

    def crash_at_6(step: int, loss: float) -> None:
        if step == 6:
            raise Crash

    with pytest.raises(Crash):
        train_lora(cfg, examples, crash_at_6)
    assert [p.name for p in ckpt.iterdir()] == ["step-0000004"]
    resumed = train_lora(cfg, examples)
    assert resumed["resumed_from_step"] == 4 and straight["resumed_from_step"] == 0
    assert resumed["validation_examples"] == straight["validation_examples"] > 0
    assert resumed["losses"] == pytest.approx(straight["losses"], abs=1e-6)
    curve, straight_curve = resumed["validation_loss"], straight["validation_loss"]
    assert [s for s, _ in curve] == [s for s, _ in straight_curve] == [0, 3, 6, 9, 10]
    assert [x for _, x in curve] == pytest.approx([x for _, x in straight_curve], abs=1e-6)
    a, b = _adapter_weights(tmp_path / "straight"), _adapter_weights(tmp_path / "resumed")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5)
    # Kept until the caller has stored the adapter (lora_adapter clears them after the upload).
    assert ckpt.is_dir()


def test_checkpoint_of_another_run_is_not_resumed(
    tiny_path: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "ckpt"
    cfg = config(tiny_path, tmp_path / "a", max_steps=6, checkpoint_dir=ckpt, checkpoint_every=2)

    def crash_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        train_lora(cfg, synthetic_examples(12), crash_at_3)
    other = train_lora(cfg.model_copy(update={"learning_rate": 1e-3}), synthetic_examples(12))
    assert other["resumed_from_step"] == 0 and other["steps"] == 6


def test_validation_split_is_by_content_and_skipped_when_tiny() -> None:
    examples = [
        {**ex, "review": f"{ex['review']} ({i})"} for i, ex in enumerate(synthetic_examples(200))
    ]
    train, val = split_validation(examples, 0.1, 4)
    assert len(train) + len(val) == 200 and 8 <= len(val) <= 35
    reweighted = [{**ex, "weight": 3.0} for ex in examples[:100]]
    _, val_half = split_validation(reweighted, 0.1, 1)
    # The same example stays on the same side when the curriculum grows or is re-weighted.
    assert [ex["review"] for ex in val_half] == [ex["review"] for ex in val if ex in examples[:100]]
    assert split_validation(examples[:10], 0.1, 4) == (examples[:10], [])


def test_early_stopping_patience() -> None:
    stopper = EarlyStopping(patience=2)
    for step, loss in [(0, 1.0), (2, 0.8), (4, 0.9), (6, 0.85)]:
        stopper.update(step, loss)
    assert stopper.should_stop and stopper.best_step == 2 and stopper.best_loss == 0.8


def test_early_stop_keeps_the_best_adapter(tiny_path: Path, tmp_path: Path) -> None:  # noqa: F811
    examples = synthetic_examples(60)
    cfg = config(
        tiny_path, tmp_path / "out", max_steps=40, learning_rate=0.2, eval_every=2, patience=2
    )
    metrics = train_lora(cfg, examples)
    curve = metrics["validation_loss"]
    assert metrics["early_stopped"] and metrics["steps"] < 40
    assert [s for s, _ in curve] == list(range(0, metrics["steps"] + 1, 2))
    best_step, best_loss = min(curve, key=lambda point: point[1])
    assert metrics["best_step"] == best_step
    # The saved adapter scores the best validation loss, not the last one.
    tokenizer = load_tokenizer(tiny_path)
    _, val = split_validation(examples, cfg.validation_fraction, cfg.min_validation_examples)
    data = encode_examples(tokenizer, val, cfg.max_prompt_tokens)
    model = build_peft_model(cfg.model_copy(update={"init_adapter_dir": tmp_path / "out"}))
    loss = validation_loss(_loss_fn(cfg, model, tokenizer), model, data, 4, _autocast(cfg))
    assert loss == pytest.approx(best_loss, abs=1e-4)


@pytest.mark.gpu
def test_recipe_trains_on_cuda_in_bf16(tiny_path: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = config(tiny_path, tmp_path / "cuda", max_steps=4, device="auto", dtype="auto")
    metrics = train_lora(cfg, synthetic_examples(16))
    assert metrics["device"] == "cuda"
    assert metrics["dtype"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    assert all(0 < loss < 100 for loss in metrics["losses"])
    assert (tmp_path / "cuda" / "adapter_model.safetensors").is_file()
