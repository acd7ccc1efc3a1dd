"""Validation split and early stopping for the LoRA recipe.

The split is by content hash: an example is held back when the sha256 of its (code, review,
severity) falls below ``fraction`` of the hash range. The same example lands on the same side in
every run and every cycle (a growing curriculum never moves a validation item into training),
and duplicates share a side. When fewer than ``min_examples`` would be held back (a tiny
curriculum) nothing is: the run trains on everything and does not early-stop.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel


def holdout_key(example: Mapping[str, Any]) -> float:
    """A uniform number in [0, 1) fixed by the example's content (not its weight)."""
    content = [example.get("code") or "", example["review"], example["severity"]]
    digest = hashlib.sha256(json.dumps(content).encode()).hexdigest()
    return int(digest[:15], 16) / 16**15


def split_validation(
    examples: Sequence[Mapping[str, Any]], fraction: float, min_examples: int
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(train, validation): the hash-selected ``fraction``, or no validation when too few."""
    held = [holdout_key(ex) < fraction for ex in examples]
    n_held = sum(held)
    if fraction <= 0 or n_held < min_examples or n_held == len(examples):
        return list(examples), []
    train = [ex for ex, h in zip(examples, held, strict=True) if not h]
    validation = [ex for ex, h in zip(examples, held, strict=True) if h]
    return train, validation


class EarlyStopping(BaseModel):
    """Validation-loss history; stops after ``patience`` evaluations without improvement."""

    patience: int
    curve: list[tuple[int, float]] = []
    best_step: int | None = None
    best_loss: float = math.inf
    bad_evals: int = 0

    def update(self, step: int, loss: float) -> bool:
        """Record an evaluation; True when it is the best so far."""
        self.curve.append((step, loss))
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.bad_evals = loss, step, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience
