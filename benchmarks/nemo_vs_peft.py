"""NeMo AutoModel recipe vs the PEFT recipe on CPU: same curriculum, same job, same steps.

    python -m benchmarks.nemo_vs_peft --steps 30 [--train-rows 240] [--heldout 80]

Builds the seed corpus in a fresh home, samples ``--train-rows`` rows of its train split
(stratified, uniform weights) as the curriculum, and builds ONE FineTuneJob from the flywheel's
`training` settings (``build_job``, as ``lora_adapter`` does). Then:

- the PEFT recipe trains it in this process (``train_lora``: the flywheel's default loss,
  ``training.loss``, is the 4-way label cross-entropy at the answer position);
- the NeMo AutoModel recipe trains it in ``.venv-nemo`` through the production entry point
  (``flywheel_assets.external.nemo_automodel_lora``: torchrun, gloo, fp32; completion
  cross-entropy over the answer tokens), with the TEST-ONLY CPU shim on its PYTHONPATH
  (``tests/support/nemo_cpu_shim``) because this is a CPU;

and the student scores the base model and both adapters on the seed corpus's held-out split
(``--heldout`` items). Prints s/step, wall time, first/last loss, held-out accuracy and macro-F1
of each, the NeMo/PEFT ratios, and writes ``results.json`` + ``loss_curves.png`` under ``--out``.
Loss values of the two recipes are not on the same scale (4-way vs full-vocabulary
cross-entropy); compare their shapes, and compare the recipes by held-out accuracy.

Last run (2 shared cores, 1 thread each, SmolLM2-135M, batch 8, LoRA r16 on the top 12 layers):
see docs/fine-tuning.md, "Side by side".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl

from flywheel_assets.assets.step06_lora_adapter import build_job
from flywheel_assets.definitions import build_definitions
from flywheel_assets.external.nemo_automodel_lora import read_jsonl, step_seconds
from flywheel_assets.external.train_lora import read_examples
from flywheel_core.ml.lora_training import train_lora
from flywheel_core.ml.nemo_data import write_nemo_dataset
from flywheel_core.ml.nemo_options import NemoOptions
from flywheel_core.ml.recipe import resolve_config
from flywheel_core.teaching.metrics import classification_report

log = logging.getLogger("benchmarks.nemo_vs_peft")
REPO = Path(__file__).resolve().parents[1]
CPU_SHIM = REPO / "tests" / "support" / "nemo_cpu_shim"  # TEST-ONLY, see its docstring
ENTRY = "flywheel_assets.external.nemo_automodel_lora"


def sample(train: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    """A stratified, seeded sample of ``rows`` train rows (all of them when fewer)."""
    if rows <= 0 or train.height <= rows:
        return train
    share = rows / train.height
    parts = [
        group.sample(max(1, round(group.height * share)), seed=seed)
        for _, group in train.sort("review").group_by("severity", maintain_order=True)
    ]
    return pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=seed)


def evaluate(student, items: pl.DataFrame, adapter_dir: Path | None) -> dict:
    results, seconds = student.rate(
        list(zip(items["code"], items["review"], strict=True)), adapter_dir=adapter_dir
    )
    report = classification_report(items["severity"].to_list(), [r["severity"] for r in results])
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "eval_s": seconds}


def run_peft(job, work: Path) -> dict:
    job = job.model_copy(update={"output_dir": str(work / "peft_adapter")})
    config, examples_path = resolve_config(job.model_dump())
    losses: list[float] = []
    started = time.perf_counter()
    metrics = train_lora(config, read_examples(examples_path), lambda s, loss: losses.append(loss))
    return {
        "adapter_dir": Path(job.output_dir),
        "losses": losses,
        "seconds_per_step": float(metrics["seconds_per_step"]),
        "wall_s": time.perf_counter() - started,
        "loss_kind": f"PEFT '{config.loss}' loss",
    }


def run_nemo(job, work: Path, python: Path, cpu_shim: bool) -> dict:
    job = job.model_copy(update={"output_dir": str(work / "nemo_adapter")})
    summary = write_nemo_dataset(
        Path(job.examples_path), work / "nemo_data", 0.0, 2.0, job.seed, job.explanation_weight
    )
    log.info("NeMo dataset: %d training rows (weights as repetitions)", summary.training_rows)
    options = NemoOptions(str(work / "nemo_data"), str(work / "nemo_experiment"))
    (work / "job.json").write_text(job.model_dump_json())
    (work / "nemo.json").write_text(json.dumps(options.to_dict()))
    path = str(REPO)
    if cpu_shim:
        path = f"{CPU_SHIM}:{path}"
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("VIRTUAL_ENV", None)
    command = [str(python), "-m", ENTRY, "--job", str(work / "job.json")]
    command += ["--nemo", str(work / "nemo.json")]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    wall = time.perf_counter() - started
    records = read_jsonl(work / "nemo_experiment" / "checkpoints" / "training.jsonl")
    return {
        "adapter_dir": Path(job.output_dir),
        "losses": [float(r["loss"]) for r in records],
        "seconds_per_step": step_seconds(records),
        "wall_s": wall,
        "loss_kind": "NeMo completion loss (answer tokens)",
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, name in zip(axes, ("peft", "nemo"), strict=True):
        losses = results[name]["losses"]
        axis.plot(range(1, len(losses) + 1), losses, marker=".")
        axis.set_title(f"{name}: {results[name]['loss_kind']}")
        axis.set_xlabel("step")
        axis.set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--train-rows", type=int, default=240)
    parser.add_argument("--heldout", type=int, default=80, help="held-out items scored")
    parser.add_argument("--nemo-python", type=Path, default=REPO / ".venv-nemo" / "bin" / "python")
    parser.add_argument("--no-cpu-shim", action="store_true", help="on a CUDA machine")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/nemo_vs_peft"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="flywheel-nemo-vs-peft-"))
    overrides = ["student.num_threads=1", *args.overrides]
    defs = build_definitions(home=home, overrides=overrides)
    instance = dg.DagsterInstance.ephemeral()
    if not defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance).success:
        raise RuntimeError("building the seed corpus failed")
    store = defs.resources["store"]
    settings = defs.resources["flywheel_config"].settings()
    student = defs.resources["student"].runner(settings.student)
    train = sample(store.seed_train_examples(), args.train_rows, settings.training.seed)
    work = home / "work"
    work.mkdir(parents=True)
    train.write_ndjson(work / "curriculum.jsonl")
    job = build_job(settings.training, student, work, None, args.steps)
    log.info("curriculum: %d rows; job: %s", train.height, job.model_dump_json())
    results = {
        "peft": run_peft(job, work),
        "nemo": run_nemo(job, work, args.nemo_python, cpu_shim=not args.no_cpu_shim),
    }
    heldout = store.heldout_items(args.heldout)
    results["base"] = {"adapter_dir": None}
    for name in ("base", "peft", "nemo"):
        results[name].update(evaluate(student, heldout, results[name]["adapter_dir"]))
    report(results, job, train.height, heldout, args.out)


def report(results: dict, job, rows: int, heldout: pl.DataFrame, out: Path) -> None:
    majority = float(heldout["severity"].value_counts()["count"].max() / heldout.height)
    print(
        f"\n{rows} curriculum rows, {job.max_steps} steps, batch {job.batch_size}, "
        f"LoRA r{job.lora_r}, lr {job.learning_rate}; held-out {heldout.height} items "
        f"(majority class {majority:.1%})"
    )
    print(
        f"{'recipe':<8} {'s/step':>7} {'wall s':>7} {'loss first':>10} {'loss last':>9} "
        f"{'held-out acc':>12} {'macro-F1':>8}"
    )
    for name in ("base", "peft", "nemo"):
        r = results[name]
        losses = r.get("losses") or [float("nan")]
        per_step = r.get("seconds_per_step") or float("nan")
        print(
            f"{name:<8} {per_step:>7.2f} {r.get('wall_s', 0.0):>7.0f} {losses[0]:>10.4f} "
            f"{losses[-1]:>9.4f} {r['accuracy']:>12.1%} {r['macro_f1']:>8.3f}"
        )
    peft, nemo = results["peft"], results["nemo"]
    ratios = {
        "seconds_per_step_nemo_over_peft": nemo["seconds_per_step"] / peft["seconds_per_step"],
        "wall_nemo_over_peft": nemo["wall_s"] / peft["wall_s"],
        "accuracy_points_nemo_minus_peft": 100 * (nemo["accuracy"] - peft["accuracy"]),
    }
    print(json.dumps({k: round(v, 3) for k, v in ratios.items()}, indent=2))
    serialisable = {
        name: {k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()}
        for name, r in results.items()
    }
    payload = {
        "job": job.model_dump(),
        "rows": rows,
        "heldout_items": heldout.height,
        "majority_class": majority,
        "results": serialisable,
        "ratios": ratios,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    plot(results, out / "loss_curves.png")


if __name__ == "__main__":
    main()
