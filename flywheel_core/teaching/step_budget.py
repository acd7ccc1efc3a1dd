"""How many optimiser steps a cycle trains: enough to learn what the cycle brought.

A fixed number of steps falls behind once feedback batches arrive: 80 steps x 8 examples see a
fraction of a 400-row batch plus the curriculum it joins. Instead, every batch holds
``batch_size - round(batch_size * replay_share)`` of the cycle's new examples (the rest replays
earlier cycles' examples, so the adapter does not forget them), and the cycle trains long enough
for ``new_data_passes`` passes over the new examples, at least ``steps_per_cycle`` and at most
``max_steps_per_cycle``. The first cycle has nothing to replay: its batches are all new.
"""

from __future__ import annotations

import math

from flywheel_core.settings import TrainingSettings


def new_per_batch(batch_size: int, replay_share: float) -> int:
    """Examples of the cycle's new data in each batch (at least one)."""
    return max(1, batch_size - round(batch_size * replay_share))


def steps_for_cycle(
    new_examples: int, earlier_examples: int, training: TrainingSettings
) -> tuple[int, str]:
    """The cycle's steps and a sentence saying how they were chosen."""
    replay = training.replay_share if earlier_examples and new_examples else 0.0
    per_batch = new_per_batch(training.batch_size, replay)
    wanted = math.ceil(training.new_data_passes * new_examples / per_batch)
    steps = min(max(wanted, training.steps_per_cycle), training.max_steps_per_cycle)
    why = (
        f"{training.new_data_passes:g} passes over {new_examples} new examples at {per_batch} "
        f"per batch of {training.batch_size} (replay share {replay:g} of {earlier_examples} "
        f"earlier) = {wanted} steps"
    )
    if steps != wanted:
        bound = "minimum steps_per_cycle" if steps > wanted else "cap max_steps_per_cycle"
        why += f", held to the {bound} = {steps}"
    return steps, why
