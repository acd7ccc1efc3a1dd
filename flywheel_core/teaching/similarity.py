"""Cheap lexical similarity (hashed bag of words, cosine) to find items near the errors."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z_][a-z0-9_]{1,}")
DIMS = 4096


def embed(texts: Sequence[str], dims: int = DIMS) -> np.ndarray:
    """Rows are L2-normalised log term counts, hashed into `dims` buckets."""
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for row, text in enumerate(texts):
        for token in _TOKEN.findall(text.lower()):
            out[row, zlib.crc32(token.encode()) % dims] += 1.0
    np.log1p(out, out=out)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-9)


def lexical_similarity(a: str, b: str) -> float:
    """Cosine of hashed bag-of-words vectors (0 for an empty text)."""
    vectors = embed([a, b])
    return float(vectors[0] @ vectors[1])


def item_text(item: dict) -> str:
    # The review says what is wrong; it is weighted twice so that similar findings, not merely
    # similar code, are close.
    return f"{item['review']} {item['review']} {item['code']}"


def max_similarity(candidates: Sequence[dict], anchors: Sequence[dict]) -> np.ndarray:
    """For each candidate, its highest cosine similarity to any anchor (0 with no anchors)."""
    if not anchors or not candidates:
        return np.zeros(len(candidates), dtype=np.float32)
    cand = embed([item_text(c) for c in candidates])
    anch = embed([item_text(a) for a in anchors])
    return (cand @ anch.T).max(axis=1)
