"""The flywheel's validated configuration: defaults file + optional override file + dotlist."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudentSettings(_Section):
    base_model: str = "smollm2-135m-instruct"
    batch_size: int = Field(8, ge=1)
    max_prompt_tokens: int = Field(256, ge=32)
    num_threads: int = Field(2, ge=1)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"


class ExamSettings(_Section):
    num_questions: int = Field(40, ge=4)
    min_share_per_class: float = Field(0.15, ge=0.0, le=0.25)


class CurriculumSettings(_Section):
    new_examples_per_cycle: int = Field(160, ge=1)
    weak_class_boost: float = Field(0.5, ge=0.0)
    feedback_weight: float = Field(1.5, gt=0.0)
    # Rarer severities weigh more: (1 / (K * share of the weight)) ** class_balance; 0 = off,
    # 1 = every severity carries the same total weight (teaching/curriculum_weights.py).
    class_balance: float = Field(0.5, ge=0.0, le=1.0)


class LoraSettings(_Section):
    """LoRA hyperparameters: declared once here; the fine-tune job and the PEFT recipe's
    TrainConfig extend this model, so a field cannot drift between them."""

    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(8, ge=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    layers_to_train: int | None = Field(12, ge=1)  # top N decoder layers only; None = all
    seed: int = 0
    # "label": cross-entropy over the four labels' first tokens at the answer position (how the
    # student is scored); "completion": over every completion token. No loss on the prompt.
    loss: Literal["label", "completion"] = "label"
    # "auto": bf16 autocast on CUDA and on CPUs with native bf16 (avx512_bf16 / AMX), else fp32.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    checkpoint_every: int = Field(10, ge=1)  # with a checkpoint dir: save + resume every N steps
    eval_every: int = Field(0, ge=0)  # validation loss every N steps; 0 = no split, no early stop
    patience: int = Field(3, ge=1)  # evaluations without improvement before stopping
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # held back by content hash
    explanation_weight: float = Field(0.5, ge=0.0)  # the explanation task; 0 = severity only
    # Share of every batch drawn from earlier cycles' examples when the curriculum marks this
    # cycle's new ones (the rest of the batch: new examples); 0 = new examples only.
    replay_share: float = Field(0.5, ge=0.0, lt=1.0)
    explanation_batch_size: int = Field(2, ge=1)
    max_explanation_tokens: int = Field(96, ge=8)


class TrainingSettings(LoraSettings):
    # Steps per cycle follow the new data (flywheel_core/teaching/step_budget.py): enough for
    # `new_data_passes` passes over the cycle's new examples when `replay_share` of every batch
    # comes from earlier cycles' examples, at least `steps_per_cycle`, at most
    # `max_steps_per_cycle`.
    steps_per_cycle: int = Field(80, ge=1)
    new_data_passes: float = Field(3.0, gt=0.0)
    max_steps_per_cycle: int = Field(320, ge=1)
    # Stopping rule (see flywheel_core/teaching/stopping.py); null disables a rule.
    plateau_cycles: int | None = Field(3, ge=1)
    plateau_min_gain: float = Field(0.02, ge=0.0)  # held-out accuracy (0.02 = 2 points)
    max_total_steps: int | None = Field(None, ge=1)
    max_gpu_hours: float | None = Field(None, gt=0.0)

    def lora(self) -> dict:
        """The LoRA hyperparameters alone (what a fine-tune job takes from these settings)."""
        return self.model_dump(include=set(LoraSettings.model_fields))


class HeldoutSettings(_Section):
    """What `heldout_evaluation` scores: the seed split, the reviewers' held-out feedback and any
    registered JSONL set ({name: path}, rows with code, review, severity)."""

    max_items: int | None = Field(None, ge=4)  # cap on the seed split (quick runs)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)  # level of every reported interval
    extra_sets: dict[str, str] = Field(default_factory=dict)


class JudgeSettings(_Section):
    """The per-cycle explanation judge: a fixed sample of held-out items, explained by the new
    adapter, the base model and the previously deployed adapter, judged pairwise."""

    sample_size: int = Field(24, ge=2)
    max_new_tokens: int = Field(96, ge=8)
    examples_shown: int = Field(3, ge=0)  # example explanations in the asset's metadata


class GateSettings(_Section):
    """Deployment gate: the candidate adapter vs. the deployed model on the held-out split."""

    max_accuracy_drop: float = Field(0.0, ge=0.0, le=1.0)  # beyond the paired interval
    block_recall_collapse: bool = True
    # A class counts as collapsed only where the serving model found at least this many of its
    # items: losing all k found items is significant at 5% (one-sided sign test) from k = 5 on;
    # 3 of 11 critical comments found and then 0 is noise, not a lost class.
    min_recalled_items: int = Field(5, ge=1)
    # The decision moves from the seed split to the reviewers' held-out feedback once it holds
    # this many items; the seed split stays as a guard.
    min_reviewer_items: int = Field(100, ge=1)
    # Blocks a candidate whose share of answers for one class exceeds that class's share of a
    # set by more than this (answering one label everywhere to buy accuracy).
    max_answer_excess: float = Field(0.35, gt=0.0, le=1.0)


class PriceSettings(_Section):
    """USD per 1M tokens; the defaults are placeholders: set your endpoint's real prices."""

    input_per_1m: float = Field(2.5, ge=0.0)
    output_per_1m: float = Field(10.0, ge=0.0)


class TeacherSettings(_Section):
    """The LLM teacher (FLYWHEEL_ENV=prod): budget, prices, privacy, concurrency, retries."""

    budget_usd_per_cycle: float | None = Field(5.0, ge=0.0)
    budget_tokens_per_cycle: int | None = Field(None, ge=0)
    prices: PriceSettings = PriceSettings()
    privacy_policy: Literal["redact", "block", "off"] = "redact"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(4096, ge=64)
    request_timeout_s: float = Field(120.0, gt=0.0)
    max_concurrency: int = Field(4, ge=1)
    max_retries: int = Field(4, ge=0)
    backoff_base_s: float = Field(1.0, ge=0.0)
    backoff_max_s: float = Field(60.0, ge=0.0)
    structured_output: bool = True
    questions_per_call: int = Field(10, ge=1)
    examples_per_call: int = Field(24, ge=1)
    candidates_per_item: int = Field(2, ge=1)


class FeedbackSettings(_Section):
    max_code_bytes: int = Field(64 * 1024, ge=1)
    # Share of every accepted batch kept out of training (by content hash) for the reviewers'
    # held-out set; 0 = train on everything (the gate then decides on the seed split).
    heldout_share: float = Field(0.15, ge=0.0, lt=1.0)


class LineageSettings(_Section):
    """Where the lineage tables live (docs/scaling-out.md). The variables FLYWHEEL_LINEAGE,
    FLYWHEEL_LINEAGE_CATALOG and FLYWHEEL_LINEAGE_DATA_PATH override these per deployment."""

    # duckdb: one embedded file, <home>/lineage.duckdb (one writing process at a time).
    # ducklake: the same tables in a DuckLake: a catalog database plus Parquet data files.
    backend: Literal["duckdb", "ducklake"] = "duckdb"
    # ducklake: a Postgres URI (postgresql://user@host/db) for many processes and machines, or a
    # local catalog file (one process at a time); null: <home>/lineage.ducklake.
    catalog: str | None = None
    # ducklake: s3://bucket/prefix/ (credentials and endpoint as for FLYWHEEL_STORAGE=s3) or a
    # local directory; null: <S3 prefix>/lineage/ with FLYWHEEL_STORAGE=s3, else
    # <home>/lineage_data.
    data_path: str | None = None
    # A write that meets a concurrent writer's commit is retried this often (with jittered
    # backoff), then fails with the conflict named.
    write_attempts: int = Field(16, ge=1)


class FlywheelSettings(_Section):
    student: StudentSettings = StudentSettings()
    exam: ExamSettings = ExamSettings()
    curriculum: CurriculumSettings = CurriculumSettings()
    training: TrainingSettings = TrainingSettings()
    heldout: HeldoutSettings = HeldoutSettings()
    gate: GateSettings = GateSettings()
    judge: JudgeSettings = JudgeSettings()
    teacher: TeacherSettings = TeacherSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    lineage: LineageSettings = LineageSettings()

    def section_hash(self, *sections: str) -> str:
        """Short content hash of the named sections (all when none named)."""
        data = self.model_dump(include=set(sections) if sections else None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_dotlist(items: Sequence[str]) -> dict[str, Any]:
    """Turn ["training.steps_per_cycle=20", "seed=1", ...] into a (nested) dict; values are
    parsed as YAML. Used for the flywheel settings and for the LoRA recipe's overrides."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form key=value or section.key=value")
        node = result
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return result


def load_settings(
    config_file: str | Path | None = None, overrides: list[str] | None = None
) -> FlywheelSettings:
    """Defaults, then the optional YAML file, then dotlist overrides; validated as a whole."""
    data = yaml.safe_load(DEFAULTS_PATH.read_text()) or {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"flywheel config file {path} does not exist")
        data = _deep_merge(data, yaml.safe_load(path.read_text()) or {})
    if overrides:
        data = _deep_merge(data, parse_dotlist(overrides))
    return FlywheelSettings.model_validate(data)


def merge_overrides(config_file: str | Path | None, overrides: Sequence[str]) -> dict[str, Any]:
    """The optional YAML file with the dotlist overrides merged in (no defaults): what a file
    must hold so `load_settings(file)` equals `load_settings(config_file, overrides)`."""
    data = (yaml.safe_load(Path(config_file).read_text()) or {}) if config_file else {}
    return _deep_merge(data, parse_dotlist(list(overrides)))
