"""Pictures for the Dagster UI, embedded in markdown metadata as PNG data URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flywheel_core.severity import SEVERITIES  # noqa: E402


def _markdown_png(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"


def loss_curve(losses: Sequence[float], validation: Sequence[tuple[int, float]] = ()) -> str:
    """Training loss per step (and validation loss where measured)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(1, len(losses) + 1), losses, label="training loss", linewidth=1)
    if validation:
        steps, values = zip(*validation, strict=True)
        ax.plot(steps, values, marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.grid(alpha=0.3)
    return _markdown_png(fig, "loss per step")


def confusion_heatmap(report: dict, title: str) -> str:
    matrix = [[report["confusion"][t][p] for p in SEVERITIES] for t in SEVERITIES]
    fig, ax = plt.subplots(figsize=(4, 3.4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(4), SEVERITIES, rotation=30)
    ax.set_yticks(range(4), SEVERITIES)
    ax.set_xlabel("student's answer")
    ax.set_ylabel("answer key")
    ax.set_title(title, fontsize=9)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
    return _markdown_png(fig, title)


def accuracy_per_set(series: dict[str, dict]) -> str:
    """Candidate accuracy over cycles on each evaluation set, with 95% intervals and the set's
    majority-class share; ``series[name]`` holds cycles, accuracy, low, high, majority lists."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for name, s in series.items():
        lower = [a - lo for a, lo in zip(s["accuracy"], s["low"], strict=True)]
        upper = [hi - a for a, hi in zip(s["accuracy"], s["high"], strict=True)]
        line = ax.errorbar(
            s["cycles"], s["accuracy"], yerr=[lower, upper], marker="o", capsize=3, label=name
        )
        ax.plot(
            s["cycles"],
            s["majority"],
            linestyle="--",
            color=line[0].get_color(),
            alpha=0.5,
            label=f"{name}: majority class",
        )
    ax.set_ylim(0, 1)
    ax.set_ylabel("candidate accuracy")
    ax.legend(loc="upper left", fontsize=7, bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _markdown_png(fig, "held-out accuracy per evaluation set")
