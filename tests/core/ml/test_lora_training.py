"""Protects LoRA training: loss drop, adapter files, warm start, weights, determinism, Pipes."""

import json
import math
import os
import random
import sys
from pathlib import Path

import pytest
import torch
from dagster import (
    AssetExecutionContext,
    DagsterEventType,
    DagsterInstance,
    PipesSubprocessClient,
    asset,
    materialize,
)

from flywheel_core.ml.base_model import (
    TINY_LLAMA,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_base_model,
)
from flywheel_core.ml.lora_training import (
    TrainConfig,
    batch_loss,
    build_peft_model,
    encode_examples,
    length_bucketed_batches,
    train_lora,
)
from flywheel_core.ml.scoring import score_severity
from flywheel_core.ml.severity_prompt import SEVERITIES

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_DIR = Path(os.environ.get("FLYWHEEL_CACHE", "~/.cache/flywheel")).expanduser()
REVIEWS = {
    "critical": "This crashes with a NoneType error.",
    "major": "This returns the wrong total.",
    "minor": "The retry loop behaves oddly.",
    "trivial": "Typo in the docstring.",
}


@pytest.fixture(scope="module")
def tiny_path() -> Path:
    return resolve_base_model(TINY_LLAMA, CACHE_DIR)


def synthetic_examples(n: int = 16, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        severity = SEVERITIES[i % len(SEVERITIES)]
        code = "\n".join(f"v{j} = {rng.randint(0, 99)}" for j in range(rng.randint(1, 6)))
        examples.append(
            {"code": code, "review": REVIEWS[severity], "severity": severity, "weight": 1.0}
        )
    return examples


def config(tiny_path: Path, out: Path, **overrides: object) -> TrainConfig:
    fields = {
        "base_model_path": tiny_path,
        "output_dir": out,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "learning_rate": 5e-3,
        "batch_size": 4,
        "max_steps": 30,
        "max_prompt_tokens": 160,
        "warmup_steps": 2,
        "num_threads": 1,
        "seed": 0,
        "dtype": "float32",
        "loss": "completion",
    }
    fields.update(overrides)
    return TrainConfig.model_validate(fields)


@pytest.fixture(scope="module")
def trained(tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("adapter")
    steps: list[tuple[int, float]] = []
    metrics = train_lora(
        config(tiny_path, out), synthetic_examples(), lambda s, x: steps.append((s, x))
    )
    return {"metrics": metrics, "steps": steps, "out": out}


def test_training_lowers_loss(trained: dict) -> None:
    losses = trained["metrics"]["losses"]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3


def test_label_loss_learns_the_four_way_choice(tiny_path: Path, tmp_path: Path) -> None:
    metrics = train_lora(
        config(tiny_path, tmp_path, loss="label", max_steps=40), synthetic_examples()
    )
    losses = metrics["losses"]
    assert abs(losses[0] - math.log(4)) < 0.1  # an untrained model is close to uniform
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2


def test_metrics_and_step_callback(trained: dict) -> None:
    metrics = trained["metrics"]
    assert [s for s, _ in trained["steps"]] == list(range(1, 31))
    assert metrics["steps"] == 30 and metrics["final_loss"] == metrics["losses"][-1]
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_s"] > 0 and metrics["wall_s"] > 0


def test_adapter_files_exist(trained: dict) -> None:
    out: Path = trained["out"]
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8


def test_adapter_loads_for_scoring_and_changes_scores(tiny_path: Path, trained: dict) -> None:
    items = [("v0 = 1", REVIEWS[s]) for s in SEVERITIES]
    base_model, tokenizer = load_model_and_tokenizer(tiny_path)
    tuned_model, _ = load_model_and_tokenizer(tiny_path, adapter_dir=trained["out"])
    wrapped, _ = load_model_and_tokenizer(tiny_path, trained["out"], merge_adapter=False)
    base = score_severity(base_model, tokenizer, items)
    tuned = score_severity(tuned_model, tokenizer, items)
    unmerged = score_severity(wrapped, tokenizer, items)
    assert all(r["severity"] in SEVERITIES for r in tuned)
    assert [r["scores"] for r in tuned] != [r["scores"] for r in base]
    for merged_result, wrapped_result in zip(tuned, unmerged, strict=True):
        for severity in SEVERITIES:
            assert merged_result["scores"][severity] == pytest.approx(
                wrapped_result["scores"][severity], abs=1e-4
            )


def test_bf16_autocast_trains(tiny_path: Path, tmp_path: Path) -> None:
    metrics = train_lora(
        config(tiny_path, tmp_path / "bf16", max_steps=3, dtype="bfloat16"), synthetic_examples()
    )
    assert metrics["dtype"] == "bfloat16"
    assert all(0 < loss < 100 for loss in metrics["losses"])


def test_same_seed_same_losses(tiny_path: Path, tmp_path: Path, trained: dict) -> None:
    again = train_lora(config(tiny_path, tmp_path / "again"), synthetic_examples())
    assert again["losses"] == pytest.approx(trained["metrics"]["losses"], abs=1e-6)


def test_warm_start_starts_from_previous_adapter(
    tiny_path: Path, tmp_path: Path, trained: dict
) -> None:
    warm = train_lora(
        config(tiny_path, tmp_path / "warm", max_steps=2, init_adapter_dir=trained["out"]),
        synthetic_examples(),
    )
    fresh = train_lora(config(tiny_path, tmp_path / "fresh", max_steps=2), synthetic_examples())
    assert warm["losses"][0] < fresh["losses"][0] - 0.3
    assert warm["losses"][0] == pytest.approx(trained["metrics"]["losses"][-1], abs=0.5)


def _lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_zero_weight_example_contributes_nothing(tiny_path: Path, tmp_path: Path) -> None:
    cfg = config(tiny_path, tmp_path / "unused")
    torch.manual_seed(0)
    model = build_peft_model(cfg)
    tokenizer = load_tokenizer(tiny_path)
    a, b = encode_examples(tokenizer, synthetic_examples(2), cfg.max_prompt_tokens)
    b_zero = b.model_copy(update={"weight": 0.0})

    def loss_and_grads(batch: list) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = batch_loss(model, batch, tokenizer.pad_token_id)
        loss.backward()
        return float(loss.detach()), _lora_grads(model)

    loss_alone, grads_alone = loss_and_grads([a])
    loss_with, grads_with = loss_and_grads([a, b_zero])
    loss_full, _ = loss_and_grads([a, b])
    # Equal up to float noise (padding changes the matmul shapes), unlike with weight 1.
    assert loss_with == pytest.approx(loss_alone, rel=1e-5)
    assert loss_full != pytest.approx(loss_alone, rel=1e-3)
    assert grads_alone.keys() == grads_with.keys() and grads_alone
    for name, grad in grads_alone.items():
        torch.testing.assert_close(grads_with[name], grad, atol=1e-5, rtol=1e-4)


def test_layers_to_train_puts_lora_on_top_layers_only(tiny_path: Path, tmp_path: Path) -> None:
    model = build_peft_model(config(tiny_path, tmp_path / "unused", layers_to_train=1))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1." in n for n in trainable)


def test_length_buckets_cover_every_example_once_per_epoch() -> None:
    lengths = [random.Random(i).randint(5, 50) for i in range(37)]
    stream = length_bucketed_batches(lengths, 4, random.Random(0))
    batches = [next(stream) for _ in range(10)]  # 37 examples -> 10 batches per epoch
    assert sorted(i for batch in batches for i in batch) == list(range(37))


def test_pipes_subprocess_round_trip(tiny_path: Path, tmp_path: Path) -> None:
    examples_path = tmp_path / "curriculum.jsonl"
    examples_path.write_text("\n".join(json.dumps(e) for e in synthetic_examples(8)) + "\n")
    job = config(tiny_path, tmp_path / "adapter", max_steps=3).model_dump(mode="json")
    job["examples_path"] = str(examples_path)

    @asset
    def student_adapter(
        context: AssetExecutionContext, pipes_subprocess_client: PipesSubprocessClient
    ):
        return pipes_subprocess_client.run(
            command=[sys.executable, "-m", "flywheel_assets.external.train_lora"],
            context=context,
            extras={"job": job},
        ).get_materialize_result()

    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [student_adapter],
            resources={
                "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT), env=env)
            },
            instance=instance,
        )
        assert result.success
        messages = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if entry.dagster_event is None
            or entry.dagster_event_type != DagsterEventType.ENGINE_EVENT
        ]
    metadata = result.asset_materializations_for_node("student_adapter")[0].metadata
    assert metadata["steps"].value == 3
    assert metadata["final_loss"].value > 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert any("step 3/3 loss" in message for message in messages)
