"""Prompt templates as files under prompts/, versioned by content hash."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from string import Template

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


@cache
def prompt_text(name: str) -> str:
    path = PROMPTS_DIR / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} does not exist")
    return path.read_text()


def prompt_sha256(name: str) -> str:
    return hashlib.sha256(prompt_text(name).encode()).hexdigest()


def render_prompt(name: str, **values: object) -> str:
    """Fill a `$placeholder` template; a missing value is an error, not a silent blank."""
    return Template(prompt_text(name)).substitute({k: str(v) for k, v in values.items()})


def prompts_version(*names: str) -> str:
    """Short combined hash of several prompts, for an asset's code_version."""
    digest = hashlib.sha256("".join(prompt_sha256(n) for n in sorted(names)).encode())
    return digest.hexdigest()[:12]
