"""The PEFT recipe's config: recipe YAML file < job fields < dotlist overrides -> TrainConfig."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from flywheel_core.ml.lora_training import TrainConfig
from flywheel_core.settings import parse_dotlist

RECIPES_DIR = Path(__file__).with_name("recipes")
DEFAULT_RECIPE = RECIPES_DIR / "lora_cpu.yaml"


def load_recipe(path: str | Path | None = None) -> dict[str, Any]:
    """The recipe file's keys (the default CPU recipe when ``path`` is None)."""
    path = Path(path) if path else DEFAULT_RECIPE
    if not path.is_file():
        raise FileNotFoundError(f"recipe file {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe file {path} must be a mapping of TrainConfig fields")
    return data


def resolve_config(
    job: Mapping[str, Any],
    recipe: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> tuple[TrainConfig, Path]:
    """(TrainConfig, examples_path) from the recipe file, the job and the overrides."""
    fields = {**load_recipe(recipe), **dict(job), **parse_dotlist(overrides)}
    if "examples_path" not in fields:
        raise ValueError("the job has no examples_path (the curriculum file)")
    examples_path = Path(fields.pop("examples_path"))
    return TrainConfig.model_validate(fields), examples_path
