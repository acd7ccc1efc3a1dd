"""What the machine offers the student: native bf16 on the CPU."""

from __future__ import annotations

from pathlib import Path


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU advertises native bf16 matmuls (avx512_bf16 or amx_bf16)."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
