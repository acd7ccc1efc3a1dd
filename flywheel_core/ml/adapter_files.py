"""A saved adapter's bytes depend only on what was trained: `adapter_config.json` made canonical.

PEFT keeps `target_modules` as a Python set and writes it in the set's iteration order, which
changes with the process's string-hash seed; the artifact store hashes raw bytes, so the same
adapter got a different sha256 on every run (de-duplication, "already serving" and
reproducibility claims by sha did not hold). After saving, the config is rewritten with sorted
keys and the set-valued fields sorted.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE = "adapter_config.json"
# Fields PEFT treats as sets (their order carries no meaning).
SET_FIELDS = ("target_modules", "modules_to_save", "exclude_modules", "trainable_token_indices")


def canonical_config(config: dict) -> str:
    """The config as canonical JSON text: sorted keys, set-valued lists sorted, two-space indent."""
    out = dict(config)
    for name in SET_FIELDS:
        value = out.get(name)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[name] = sorted(set(value))
    return json.dumps(out, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def canonicalize_adapter_config(adapter_dir: Path) -> bool:
    """Rewrite `adapter_dir/adapter_config.json` canonically (no-op without one); True if it
    changed."""
    path = Path(adapter_dir) / CONFIG_FILE
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    canonical = canonical_config(json.loads(text))
    if canonical == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(canonical, encoding="utf-8")
    tmp.replace(path)
    return True
