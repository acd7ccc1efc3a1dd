"""Accuracy benchmark (run by hand): base SmolLM2 vs. each flywheel cycle vs. a flat fine-tune.

    python -m benchmarks.accuracy --cycles 3 \
        --wsu ../shared/datasets/wsu_review_comments/review_comments.jsonl

The flywheel runs its cycles in a fresh home (or reuses a finished demo with --reuse-home); the
flat fine-tune trains one LoRA with the same hyperparameters and the same total number of steps
on the seed corpus's whole train split, uniform weights, no curriculum. Every model is scored on
the seed corpus's held-out split and on the labelled WSU human review comments. Prints a table
(accuracy, macro-F1, majority-class baseline) and writes accuracy_per_cycle.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import polars as pl

from flywheel_assets.assets.step06_lora_adapter import build_job
from flywheel_assets.definitions import build_definitions
from flywheel_assets.external.train_lora import read_examples
from flywheel_cli.instance import persistent_instance
from flywheel_cli.runner import demo_cycle_keys, run_cycles
from flywheel_core.ml.lora_training import train_lora
from flywheel_core.ml.recipe import resolve_config
from flywheel_core.teaching.metrics import classification_report

log = logging.getLogger("benchmarks.accuracy")


def load_wsu(path: Path, limit: int) -> pl.DataFrame:
    """Labelled WSU comments (severity not null), a fixed stratified sample of `limit` rows."""
    rows = pl.read_ndjson(path).filter(pl.col("severity").is_not_null())
    rows = rows.select("id", "code", "review", "severity").sort("id")
    if limit and rows.height > limit:
        share = limit / rows.height
        rows = pl.concat(
            group.head(max(1, round(group.height * share)))
            for _, group in rows.group_by("severity", maintain_order=True)
        )
    return rows


def evaluate(student, items: pl.DataFrame, adapter_dir: Path | None) -> dict:
    results, seconds = student.rate(
        list(zip(items["code"], items["review"], strict=True)), adapter_dir=adapter_dir
    )
    report = classification_report(items["severity"].to_list(), [r["severity"] for r in results])
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "seconds": seconds}


def flat_finetune(defs, total_steps: int, out: Path) -> tuple[Path, dict]:
    """One LoRA on the whole train split, uniform weights, through the flywheel's own job and
    recipe path (same settings), for the same total number of steps."""
    settings = defs.resources["flywheel_config"].settings()
    train = defs.resources["store"].seed_train_examples()
    out.mkdir(parents=True, exist_ok=True)
    train.write_ndjson(out / "curriculum.jsonl")
    student = defs.resources["student"].runner(settings.student)
    job = build_job(settings.training, student, out, None, total_steps)
    config, examples_path = resolve_config(job.model_dump())
    return Path(job.output_dir), train_lora(config, read_examples(examples_path))


def majority(items: pl.DataFrame) -> float:
    return float(items["severity"].value_counts()["count"].max() / items.height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--wsu", type=Path, required=True, help="review_comments.jsonl")
    parser.add_argument("--wsu-limit", type=int, default=400)
    parser.add_argument("--reuse-home", type=Path, help="a finished demo's FLYWHEEL_HOME")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/accuracy"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    home = (args.reuse_home or Path(tempfile.mkdtemp(prefix="flywheel-bench-"))).resolve()
    defs = build_definitions(home=home, overrides=args.overrides)
    if not args.reuse_home:
        run_cycles(defs, persistent_instance(home), demo_cycle_keys(args.cycles))
    store, artifacts = defs.resources["store"], defs.resources["artifacts"]
    student = defs.resources["student"].runner(defs.resources["flywheel_config"].settings().student)
    heldout = store.heldout_items()
    wsu = load_wsu(args.wsu, args.wsu_limit)
    adapters = store.adapters_in_order().iter_rows(named=True)
    models: list[tuple[str, Path | None, int]] = [("base SmolLM2", None, 0)]
    steps = 0
    for row in adapters:
        steps += row["steps"]
        adapter_dir = artifacts.adapter_dir(row)
        models.append((f"flywheel after {row['cycle']}", adapter_dir, steps))
    started = time.perf_counter()
    flat_dir, flat_metrics = flat_finetune(defs, steps, args.out / "flat")
    log.info("flat fine-tune: %d steps in %.0fs", steps, time.perf_counter() - started)
    models.append(("flat fine-tune", flat_dir, steps))
    rows = []
    for name, adapter_dir, n_steps in models:
        seed = evaluate(student, heldout, adapter_dir)
        human = evaluate(student, wsu, adapter_dir)
        rows.append(
            {
                "model": name,
                "steps": n_steps,
                **_prefixed(seed, "heldout"),
                **_prefixed(human, "wsu"),
            }
        )
        log.info("%s: %s", name, rows[-1])
    table = pl.DataFrame(rows)
    print_table(table, majority(heldout), majority(wsu), heldout.height, wsu.height)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    plot(table, args.out / "accuracy_per_cycle.png", majority(heldout))


def _prefixed(result: dict, prefix: str) -> dict:
    return {f"{prefix}_{k}": v for k, v in result.items() if k != "seconds"}


def print_table(table: pl.DataFrame, maj_seed: float, maj_wsu: float, n_seed: int, n_wsu: int):
    print(
        f"\nseed held-out: {n_seed} items (majority class {maj_seed:.1%}); "
        f"WSU human comments: {n_wsu} items (majority class {maj_wsu:.1%})"
    )
    print(
        f"{'model':<28} {'steps':>5} {'held-out acc':>12} {'macro-F1':>8} "
        f"{'WSU acc':>8} {'macro-F1':>8}"
    )
    for r in table.iter_rows(named=True):
        print(
            f"{r['model']:<28} {r['steps']:>5} {r['heldout_accuracy']:>12.1%} "
            f"{r['heldout_macro_f1']:>8.3f} {r['wsu_accuracy']:>8.1%} {r['wsu_macro_f1']:>8.3f}"
        )


def plot(table: pl.DataFrame, path: Path, baseline: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flywheel = table.filter(~pl.col("model").str.starts_with("flat"))
    flat = table.filter(pl.col("model").str.starts_with("flat"))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(flywheel["steps"], flywheel["heldout_accuracy"], marker="o", label="flywheel (seed)")
    ax.plot(flywheel["steps"], flywheel["wsu_accuracy"], marker="o", label="flywheel (WSU)")
    ax.scatter(flat["steps"], flat["heldout_accuracy"], marker="*", s=120, label="flat (seed)")
    ax.scatter(flat["steps"], flat["wsu_accuracy"], marker="*", s=120, label="flat (WSU)")
    ax.axhline(baseline, color="grey", linestyle="--", label="majority class (seed)")
    ax.set_xlabel("training steps")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
