"""Does the wheel learn its reviewers? Real human review verdicts fed as feedback batches.

    python -m benchmarks.reviewer_feedback \
        --wsu ../shared/datasets/wsu_review_comments/review_comments.jsonl --seeds 0 1

The labelled WSU comments (OpenStack Nova reviews with a severity) are split by a hash of their
id: `--never-fed` of them are never shown to the flywheel (the team's future comments), the rest
are fed as `--batches` feedback batches after a bootstrap cycle, each through the landing zone and
the flywheel's own runner, from the base model, on the embedded defaults (plus any `--set`). Per
cycle and seed it reports the candidate adapter's and the serving model's accuracy and macro-F1 on
the never-fed comments and the candidate's on the seed held-out split, the gate's verdict, and
the baselines: the majority class, the base model, and a flat fine-tune (one LoRA from the base
model on all the fed rows, uniform weights, the same hyperparameters and total steps). Writes
results.json and reviewer_feedback.png under --out.
"""

from __future__ import annotations

import argparse
import hashlib
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
from flywheel_cli.runner import run_cycles
from flywheel_core.ml.lora_training import train_lora
from flywheel_core.ml.recipe import resolve_config
from flywheel_core.teaching.heldout_sets import score_set

log = logging.getLogger("benchmarks.reviewer_feedback")


def split_wsu(
    path: Path, never_fed: float, batches: int
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """(never-fed rows, fed batches): by sha256 of the comment id, the same on every machine."""
    rows = pl.read_ndjson(path).filter(pl.col("severity").is_not_null())
    rows = rows.select("id", "code", "review", "severity").with_columns(
        bucket=pl.col("id").map_elements(
            lambda i: int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) / 2**32,
            return_dtype=pl.Float64,
        )
    )
    held = rows.filter(pl.col("bucket") < never_fed).drop("bucket")
    fed = rows.filter(pl.col("bucket") >= never_fed).sort("bucket").drop("bucket")
    size = -(-fed.height // batches)
    return held, [fed.slice(k * size, size) for k in range(batches)]


def evaluate(student, items: pl.DataFrame, adapter_dir: Path | None) -> dict:
    results, _ = student.rate(
        list(zip(items["code"], items["review"], strict=True)), adapter_dir=adapter_dir
    )
    score = score_set(items["severity"].to_list(), [r["severity"] for r in results])
    return {
        k: score[k]
        for k in ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "answers", "majority")
    }


def flat_finetune(defs, fed: pl.DataFrame, steps: int, out: Path) -> Path:
    settings = defs.resources["flywheel_config"].settings()
    out.mkdir(parents=True, exist_ok=True)
    fed.select("code", "review", "severity").with_columns(weight=pl.lit(1.0)).write_ndjson(
        out / "curriculum.jsonl"
    )
    student = defs.resources["student"].runner(settings.student)
    job = build_job(settings.training, student, out, None, steps)
    config, examples_path = resolve_config(job.model_dump())
    train_lora(config, read_examples(examples_path))
    return Path(job.output_dir)


def run_seed(args, seed: int, never: pl.DataFrame, batches: list[pl.DataFrame]) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"flywheel-wsu-{seed}-"))
    keys = ["bootstrap", *(f"wsu-{k + 1}" for k in range(len(batches)))]
    for key, batch in zip(keys[1:], batches, strict=True):
        (home / "feedback").mkdir(parents=True, exist_ok=True)
        batch.drop("id").write_ndjson(home / "feedback" / f"{key}.jsonl")
    defs = build_definitions(home=home, overrides=[f"training.seed={seed}", *args.overrides])
    started = time.perf_counter()
    timings = run_cycles(defs, persistent_instance(home), keys)
    flywheel_s = time.perf_counter() - started
    store, artifacts = defs.resources["store"], defs.resources["artifacts"]
    student = defs.resources["student"].runner(defs.resources["flywheel_config"].settings().student)
    base = evaluate(student, never, None)
    cycles, steps = [], 0
    for key in keys:
        adapter = store.adapter(key)
        steps += adapter["steps"]
        comparisons = store.heldout_comparisons(key)
        deciding = next(
            (n for n, c in comparisons.items() if c["candidate"].get("decides")), "seed"
        )
        cycles.append(
            {
                "cycle": key,
                "steps": adapter["steps"],
                "total_steps": steps,
                "never_fed": evaluate(student, never, artifacts.adapter_dir(adapter)),
                "seed_heldout": {
                    k: comparisons["seed"]["candidate"][k] for k in ("accuracy", "macro_f1")
                },
                "reviewers_heldout_items": comparisons.get("reviewers", {})
                .get("candidate", {})
                .get("n", 0),
                "gate_set": deciding,
                "deployed": store.query(
                    "SELECT count(*) AS n FROM deployments WHERE cycle = ?", [key]
                )["n"][0]
                > 0,
            }
        )
        # What the team has after the cycle: the candidate if the gate let it through.
        before = cycles[-2]["serving_never_fed"] if len(cycles) > 1 else base
        cycles[-1]["serving_never_fed"] = (
            cycles[-1]["never_fed"] if cycles[-1]["deployed"] else before
        )
        log.info("seed %d %s: %s", seed, key, cycles[-1])
    result = {
        "seed": seed,
        "home": str(home),
        "cycles": cycles,
        "flywheel_seconds": flywheel_s,
        "cycle_seconds": [round(t["wall"]) for t in timings],
        "base": {"never_fed": base},
        "flat": None,
    }
    if args.flat:
        started = time.perf_counter()
        flat_dir = flat_finetune(defs, pl.concat(batches), steps, args.out / f"flat-seed{seed}")
        result["flat"] = {
            "steps": steps,
            "seconds": time.perf_counter() - started,
            "never_fed": evaluate(student, never, flat_dir),
            "seed_heldout": evaluate(student, store.heldout_items(), flat_dir),
        }
    return result


def print_report(results: list[dict], never: pl.DataFrame) -> None:
    majority = float(never["severity"].value_counts()["count"].max() / never.height)
    print(f"\nnever-fed WSU comments: {never.height} (majority class {majority:.1%})")
    header = f"{'seed':>4} {'model':<22} {'steps':>5} {'never-fed acc':>13} {'F1':>6}"
    print(header + f" {'seed held-out':>13} {'F1':>6}  gate; serving after the cycle")
    for r in results:
        base = r["base"]["never_fed"]
        print(
            f"{r['seed']:>4} {'base model':<22} {0:>5} {base['accuracy']:>13.1%} "
            f"{base['macro_f1']:>6.3f}"
        )
        for c in r["cycles"]:
            nf, sh = c["never_fed"], c["seed_heldout"]
            gate = f"{'deployed' if c['deployed'] else 'blocked'} (on {c['gate_set']}); "
            serving = c["serving_never_fed"]
            gate += f"{serving['accuracy']:.1%} / {serving['macro_f1']:.3f}"
            print(
                f"{r['seed']:>4} {'flywheel ' + c['cycle']:<22} {c['total_steps']:>5} "
                f"{nf['accuracy']:>13.1%} {nf['macro_f1']:>6.3f} {sh['accuracy']:>13.1%} "
                f"{sh['macro_f1']:>6.3f}  {gate}"
            )
        f = r["flat"]
        if f is None:
            print(f"     (no flat fine-tune); flywheel {r['flywheel_seconds']:.0f}s")
            continue
        print(
            f"{r['seed']:>4} {'flat fine-tune':<22} {f['steps']:>5} "
            f"{f['never_fed']['accuracy']:>13.1%} {f['never_fed']['macro_f1']:>6.3f} "
            f"{f['seed_heldout']['accuracy']:>13.1%} {f['seed_heldout']['macro_f1']:>6.3f}"
        )
        last = r["cycles"][-1]["never_fed"]
        print(
            f"     flywheel / flat (never-fed accuracy): "
            f"{last['accuracy'] / max(f['never_fed']['accuracy'], 1e-9):.2f}x; "
            f"flywheel {r['flywheel_seconds']:.0f}s, flat {f['seconds']:.0f}s"
        )


def plot(results: list[dict], path: Path, majority: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in results:
        steps = [c["total_steps"] for c in r["cycles"]]
        ax.plot(
            steps,
            [c["never_fed"]["accuracy"] for c in r["cycles"]],
            marker="o",
            label=f"flywheel, never-fed (seed {r['seed']})",
        )
        ax.plot(
            steps,
            [c["seed_heldout"]["accuracy"] for c in r["cycles"]],
            marker="x",
            linestyle=":",
            label=f"flywheel, seed held-out (seed {r['seed']})",
        )
        if not r["flat"]:
            continue
        ax.scatter(
            [r["flat"]["steps"]],
            [r["flat"]["never_fed"]["accuracy"]],
            marker="*",
            s=120,
            label=f"flat, never-fed (seed {r['seed']})",
        )
    ax.axhline(majority, color="grey", linestyle="--", label="majority class (never-fed)")
    ax.set_xlabel("training steps")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=100, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wsu", type=Path, required=True, help="review_comments.jsonl")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--never-fed", type=float, default=0.34, help="share never fed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/reviewer_feedback"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--no-flat", dest="flat", action="store_false", help="skip the flat fine-tune baseline"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    never, batches = split_wsu(args.wsu, args.never_fed, args.batches)
    log.info("never fed: %d rows; fed: %s", never.height, [b.height for b in batches])
    results = []
    for seed in args.seeds:
        results.append(run_seed(args, seed, never, batches))
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print_report(results, never)
    majority = float(never["severity"].value_counts()["count"].max() / never.height)
    plot(results, args.out / "reviewer_feedback.png", majority)


if __name__ == "__main__":
    main()
