"""Options of the NeMo AutoModel fine-tune, shared by its launchers and its entry script."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# What NIM accepts in an adapter's target_modules (NIM for LLMs PEFT documentation).
NIM_TARGET_MODULES = frozenset(
    {"gate_proj", "o_proj", "up_proj", "down_proj", "k_proj", "q_proj", "v_proj", "attention_qkv"}
)
HF_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class NemoOptions:
    """NeMo-specific settings, sent by the launcher as the Pipes extra ``nemo``. The LoRA
    hyperparameters and the base model are the job's (the student's), never set here."""

    dataset_root: str  # training.jsonl + validation.jsonl (flywheel_core.ml.nemo_data)
    experiment_dir: str  # recipe.yaml, checkpoints (crash resume), training.jsonl metrics
    adapter_name: str = "severity"  # the LoRA's name under NIM_PEFT_SOURCE
    device: str = "auto"  # auto: cuda when torch sees one, else cpu
    nproc_per_node: int = 1  # torchrun processes (one per GPU)
    num_nodes: int = 1
    val_every_steps: int = 0  # validation loss every N steps (0 = at the end only)
    recipe: str | None = None  # a YAML merged over the generated recipe
    overrides: tuple[str, ...] = field(default=())  # dotlist over everything else

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r}; expected one of {DEVICES}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NemoOptions:
        values = dict(data)
        values["overrides"] = tuple(values.get("overrides") or ())
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["overrides"] = list(self.overrides)
        return values
