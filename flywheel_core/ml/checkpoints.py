"""Crash-safe training checkpoints: LoRA weights, optimizer, scheduler, RNG and loop state.

A checkpoint is one directory ``step-<n>/state.pt`` under the run's checkpoint dir, written to a
temporary directory first and renamed into place, so every ``step-*`` directory is complete.
Only the latest is kept. Each carries the run's fingerprint (config minus output paths, plus
the training data): a checkpoint of another run is never resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
_PREFIX = "step-"


def run_fingerprint(config: Mapping[str, Any], examples: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of what a run's result depends on (pass the config without output paths)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(json.dumps(list(examples), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable (LoRA) parameters."""
    return {
        n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
    }


def load_trainable_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's trainable parameters (names must match exactly)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if params.keys() != state.keys():
        raise ValueError("checkpoint does not match the model's trainable parameters")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        suffix = path.name.removeprefix(_PREFIX)
        if path.name.startswith(_PREFIX) and suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def save_checkpoint(root: Path, step: int, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as the checkpoint of ``step`` atomically; drop older checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(dict(payload), tmp / STATE_FILE)
    final = root / f"{_PREFIX}{step:07d}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old_step, path in _step_dirs(root):
        if old_step < step:
            shutil.rmtree(path, ignore_errors=True)
    return final


def load_latest_checkpoint(root: Path | None, fingerprint: str) -> dict[str, Any] | None:
    """The latest complete checkpoint of this run, or None (no dir, none saved, other run)."""
    if root is None:
        return None
    for step, path in reversed(_step_dirs(Path(root))):
        payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        if payload.get("fingerprint") == fingerprint:
            logger.info("resuming from checkpoint %s (step %d)", path, step)
            return payload
        logger.warning("ignoring checkpoint %s: it belongs to another run", path)
    return None


def clear_checkpoints(root: Path | None) -> None:
    """Remove a finished run's checkpoints (the adapter is saved; nothing left to resume)."""
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
