"""Production serving configs, generated from the deployed adapters (they cannot run here).

Two targets, both with LoRA hot-loading on one copy of the base weights:

- Triton with the vLLM backend: `<repo>/<model>/config.pbtxt` (`backend: "vllm"`),
  `<repo>/<model>/1/model.json` (vLLM engine arguments, `enable_lora`) and
  `<repo>/<model>/1/multi_lora.json` (adapter name -> adapter directory). A request picks an
  adapter with the `lora_name` request parameter.
- A NIM for LLMs: adapters laid out one folder per name under `NIM_PEFT_SOURCE` (each with
  `adapter_config.json` + `adapter_model.safetensors`, the HF PEFT layout the flywheel already
  writes); the OpenAI-compatible API selects one with `"model": "<adapter name>"`.

The explanation (the local model's EXPLAIN input / EXPLANATION output) is a plain generation on
both, once the severity is known: the messages from `prompts/explain_severity.md`
(`ml.explanation_prompt.render_explain_messages`) go to the NIM's chat endpoint
(`/v1/chat/completions`, temperature 0, `max_tokens` 96), or, chat-templated, into the vLLM
model's `text_input` with the same sampling parameters.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

VLLM_CONFIG = """# Triton vLLM backend: the flywheel student with LoRA adapters (generated).
backend: "vllm"
instance_group [ {{ count: 1, kind: KIND_MODEL }} ]
model_transaction_policy {{ decoupled: {decoupled} }}
"""


def vllm_engine_args(
    base_model: str, max_lora_rank: int, max_loras: int, gpu_memory_utilization: float = 0.9
) -> dict:
    """vLLM engine arguments for `model.json` (any `vllm.AsyncEngineArgs` field)."""
    return {
        "model": base_model,
        "enable_lora": True,
        "max_lora_rank": max_lora_rank,
        "max_loras": max_loras,
        "gpu_memory_utilization": gpu_memory_utilization,
        "disable_log_requests": True,
    }


def write_vllm_repository(
    target: Path,
    base_model: str,
    adapters: Mapping[str, Path],
    model_name: str = "flywheel_student_vllm",
    max_lora_rank: int = 16,
    decoupled: bool = False,
) -> Path:
    """A Triton model repository for the vLLM backend serving `adapters` by name."""
    if not adapters:
        raise ValueError("no adapters to serve")
    model_dir = Path(target) / model_name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(VLLM_CONFIG.format(decoupled=str(decoupled).lower()))
    args = vllm_engine_args(base_model, max_lora_rank, max_loras=len(adapters))
    (version_dir / "model.json").write_text(json.dumps(args, indent=2) + "\n")
    lora = {name: str(Path(path).resolve()) for name, path in adapters.items()}
    (version_dir / "multi_lora.json").write_text(json.dumps(lora, indent=2) + "\n")
    return model_dir


def write_nim_peft_source(target: Path, adapters: Mapping[str, Path]) -> dict[str, str]:
    """Copy adapters into a NIM `NIM_PEFT_SOURCE` layout; the environment the NIM needs."""
    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    for name, path in adapters.items():
        shutil.copytree(path, root / name, dirs_exist_ok=True)
    return {"NIM_PEFT_SOURCE": str(root.resolve()), "NIM_PEFT_REFRESH_INTERVAL": "60"}


def deployed_adapters(rows: list[dict], artifacts_dir: Path | None = None) -> dict[str, Path]:
    """`cycle-<cycle>` -> adapter directory for deployment rows (`cycle`, `adapter_sha256`,
    and `uri` or an artifacts dir holding `adapters/<sha256>`)."""
    adapters = {}
    for row in rows:
        if row.get("uri"):
            path = Path(str(row["uri"]).removeprefix("file://"))
        elif artifacts_dir is not None:
            path = Path(artifacts_dir) / "adapters" / row["adapter_sha256"]
        else:
            raise ValueError(f"no location for the adapter of cycle {row['cycle']}")
        adapters[f"cycle-{row['cycle']}"] = path
    return adapters
