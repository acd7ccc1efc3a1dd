"""Options of the NeMo fine-tune, shared by its launchers and its entry script."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# Megatron module names of a Llama block: fused q/k/v, attention output, MLP in (gate+up), out.
DEFAULT_TARGET_MODULES = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
# What NIM accepts in an adapter's target_modules (NIM for LLMs PEFT documentation).
NIM_TARGET_MODULES = frozenset(
    {"gate_proj", "o_proj", "up_proj", "down_proj", "k_proj", "q_proj", "v_proj", "attention_qkv"}
)
HF_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MODEL_CONFIGS = {
    "llama3_8b": "Llama3Config8B",
    "llama31_8b": "Llama31Config8B",
    "llama32_1b": "Llama32Config1B",
    "llama32_3b": "Llama32Config3B",
}


@dataclass(frozen=True)
class NemoOptions:
    """NeMo-specific settings, sent by the launcher as the Pipes extra ``nemo``."""

    dataset_root: str
    experiment_dir: str  # NeMo logs + resumable checkpoints; outside the adapter output dir
    base_model: str = "hf://meta-llama/Meta-Llama-3-8B-Instruct"  # hf://..., nemo://..., or a dir
    model_config: str = "llama3_8b"  # a key of MODEL_CONFIGS; must match base_model
    adapter_name: str = "severity"
    accelerator: str = "gpu"  # "cpu" only to construct the recipe on a machine without CUDA
    devices: int = 1
    num_nodes: int = 1
    tensor_parallel: int = 1
    seq_length: int = 2048
    micro_batch_size: int = 1
    precision: str = "bf16-mixed"
    target_modules: tuple[str, ...] = field(default=DEFAULT_TARGET_MODULES)
    val_check_interval: int = 50
    limit_val_batches: int = 8
    checkpoint_every: int = 50
    num_workers: int = 2
    tokenizer: str | None = None  # HF id or dir; default: derived from base_model

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NemoOptions:
        values = dict(data)
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values
