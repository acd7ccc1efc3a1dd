"""Which accepted feedback rows the flywheel keeps out of training, decided by content hash.

A row is held out when the first 32 bits of its content sha256 fall below ``share`` of the range:
the same row is held out in every batch, on every machine, whatever order it arrives in, and a
resent row cannot move from the held-out side to the training side. Held-out rows accumulate, batch
after batch, into the flywheel's "reviewers" evaluation set.
"""

from __future__ import annotations

_RANGE = 2**32


def is_held_out(content_sha256: str, share: float) -> bool:
    """True when a row with this content hash belongs to the held-out share (0 <= share < 1)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"held-out share must be in [0, 1), got {share}")
    return int(content_sha256[:8], 16) < share * _RANGE
