"""explanation_preference: whose explanations does the judge prefer, the new adapter's or the
base model's / the previously deployed adapter's?

On a fixed, severity-stratified sample of the held-out split (the same items every cycle, never
trained on), each model explains the item's reference severity (so all explanations argue the
same claim); the teacher judges every candidate/baseline pair twice with the order swapped
(``Teacher.judge_explanations``: a verdict that flips with the order is a tie). Explanations are
cached per model and item, so the base model writes its once and a deployed adapter's are the
ones it wrote as a candidate.
"""

import hashlib
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import polars as pl

from flywheel_assets import lineage
from flywheel_assets.assets.adapter import lora_adapter
from flywheel_assets.assets.answers import progress_logger
from flywheel_assets.markdown import table
from flywheel_assets.ml.explaining import DECODING
from flywheel_assets.partitions import cycle_asset
from flywheel_assets.prompts import prompt_sha256, prompts_version
from flywheel_assets.severity import SEVERITIES
from flywheel_assets.teaching.explanation_judge import proxy_name
from flywheel_assets.teaching.preference import PairResult, Preference, outcome, tally
from flywheel_assets.teaching.reference_explanations import corpus_reference
from resources.artifact_store import ArtifactStore
from resources.flywheel_config import FlywheelConfig
from resources.lineage_store import LineageStore
from resources.student import StudentModel
from resources.teacher import Item, JudgeRequest, Teacher

VERSION = f"1-{prompts_version('explain_severity', 'judge_explanations')}"
EXAMPLE_CHARS = 400


def judge_sample(items: pl.DataFrame, size: int) -> pl.DataFrame:
    """``size`` items, as even across severities as the split allows, picked by a hash of the
    item id: the same items every cycle, and not the first ones in any order."""
    ranked = items.with_columns(
        rank=pl.col("item_id").map_elements(
            lambda i: hashlib.sha256(i.encode()).hexdigest(), return_dtype=pl.String
        )
    ).sort("rank")
    per_class = {s: ranked.filter(pl.col("severity") == s) for s in SEVERITIES}
    chosen: list[pl.DataFrame] = []
    depth = 0
    while sum(f.height for f in chosen) < size and depth < items.height:
        for severity in SEVERITIES:
            row = per_class[severity].slice(depth, 1)
            if row.height and sum(f.height for f in chosen) < size:
                chosen.append(row)
        depth += 1
    return pl.concat(chosen).drop("rank").sort("item_id") if chosen else items.head(0)


def model_ref(student: StudentModel, adapter: dict | None) -> str:
    return f"adapter:{adapter['adapter_sha256']}" if adapter else f"base:{student.base_model_id()}"


def explanations_of(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    sample: pl.DataFrame,
    adapter: dict | None,
    max_new_tokens: int,
) -> tuple[dict[str, str], float]:
    """item_id -> explanation written by one model (cached per model, prompt, length cap and
    decoding)."""
    ref, prompt = model_ref(student, adapter), prompt_sha256("explain_severity")
    cached = store.query(
        "SELECT item_id, explanation FROM explanations WHERE model_ref = ? AND prompt_sha256 = ? "
        "AND max_new_tokens = ? AND decoding = ?",
        [ref, prompt, max_new_tokens, DECODING],
    )
    known = dict(zip(cached["item_id"], cached["explanation"], strict=True))
    missing = sample.filter(~pl.col("item_id").is_in(list(known)))
    seconds = 0.0
    if missing.height:
        adapter_dir = artifacts.local_dir(lineage.adapter_ref(adapter)) if adapter else None
        texts, seconds = student.explain(
            list(zip(missing["code"], missing["review"], missing["severity"], strict=True)),
            adapter_dir=adapter_dir,
            max_new_tokens=max_new_tokens,
            on_progress=progress_logger(context, f"explanations [{ref[:20]}]"),
        )
        rows = missing.select("item_id", "severity").with_columns(
            explanation=pl.Series(texts, dtype=pl.String),
            model_ref=pl.lit(ref),
            prompt_sha256=pl.lit(prompt),
            max_new_tokens=pl.lit(max_new_tokens),
            decoding=pl.lit(DECODING),
            seconds=pl.lit(seconds / missing.height),
        )
        store.append_rows("explanations", rows)
        known.update(zip(missing["item_id"], texts, strict=True))
    return known, seconds


def sample_references(sample: pl.DataFrame) -> dict[str, str | None]:
    """item_id -> the corpus teacher's reference explanation (None without a documented fix)."""
    return {
        r["item_id"]: corpus_reference(r["severity"], r["code"], r["good_code"], r["details"])
        for r in sample.iter_rows(named=True)
    }


def judge_pairs(
    teacher: Teacher,
    cycle: str,
    sample: pl.DataFrame,
    references: dict[str, str | None],
    candidate: dict[str, str],
    baseline: dict[str, str],
    baseline_name: str,
) -> list[PairResult]:
    """Every sampled item's candidate explanation (as A) against the baseline's (as B); pairs
    are judged concurrently up to the teacher's ``max_concurrency`` (an LLM endpoint's limit)."""

    def judge(row: dict) -> PairResult:
        verdict = teacher.judge_explanations(
            JudgeRequest(
                cycle=cycle,
                item=Item.model_validate(row),
                explanation_a=candidate[row["item_id"]],
                explanation_b=baseline[row["item_id"]],
                reference=references[row["item_id"]],
            )
        )
        winner = outcome(verdict.winner) if verdict.valid else None
        return PairResult(row["item_id"], "candidate", baseline_name, winner, verdict.reason)

    workers = max(1, int(getattr(teacher, "max_concurrency", 1)))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(judge, sample.iter_rows(named=True)))


def preference_table(prefs: dict[str, Preference]) -> str:
    rows = [
        (
            f"new adapter vs {name}",
            p.wins,
            p.ties,
            p.losses,
            f"{p.differential:+.2f}",
            f"[{p.ci_low:+.2f}, {p.ci_high:+.2f}]",
        )
        for name, p in prefs.items()
    ]
    return table(["comparison", "wins", "ties", "losses", "differential", "95% CI"], rows)


def _clip(text: str) -> str:
    flat = " ".join((text or "").split()).replace("|", "/")
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 3] + "..."


def examples_markdown(
    sample: pl.DataFrame,
    texts: dict[str, dict[str, str]],
    verdicts: dict[str, dict[str, str | None]],
    count: int,
) -> str:
    """A few items: the finding, each model's explanation and the judge's verdicts."""
    blocks = []
    for row in sample.head(count).iter_rows(named=True):
        lines = [
            f"**{row['item_id']}** ({row['severity']}): {_clip(row['review'])}",
            "",
            "| model | explanation |",
            "|---|---|",
        ]
        lines += [f"| {name} | {_clip(t[row['item_id']])} |" for name, t in texts.items()]
        said = ", ".join(
            f"vs {b}: {v.get(row['item_id']) or 'no verdict'}" for b, v in verdicts.items()
        )
        blocks.append("\n".join([*lines, "", f"judge: {said}"]))
    return "\n\n".join(blocks)


@cycle_asset(VERSION, deps=[lora_adapter])
def explanation_preference(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    teacher: Teacher,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """Preference differential of the new adapter's explanations vs the base model's and the
    previously deployed adapter's, with wins / ties / losses, a 95% CI and example explanations."""
    cycle = context.partition_key
    settings = flywheel_config.settings().judge
    candidate_rows = store.query("SELECT * FROM adapters WHERE cycle = ?", [cycle])
    if candidate_rows.is_empty():
        raise dg.Failure(f"cycle {cycle} has no adapter: materialize lora_adapter first")
    candidate = candidate_rows.row(0, named=True)
    sample = judge_sample(lineage.heldout_items(store, None), settings.sample_size)
    baselines: dict[str, dict | None] = {"base model": None}
    serving = lineage.serving_adapter(store, cycle)
    notes = []
    if serving is None:
        notes.append("no adapter was deployed before this cycle: only the base model compared")
    elif serving["adapter_sha256"] == candidate["adapter_sha256"]:
        notes.append("the deployed adapter is this cycle's (no fine-tune): not compared to itself")
    else:
        baselines[f"deployed ({serving['deployed_in']})"] = serving
    references = sample_references(sample)
    max_new = settings.max_new_tokens
    texts, seconds = {}, 0.0
    for name, adapter in {"new adapter": candidate, **baselines}.items():
        texts[name], took = explanations_of(
            context, store, student, artifacts, sample, adapter, max_new
        )
        seconds += took
    prefs, verdicts, judged = {}, {}, []
    for name, adapter in baselines.items():
        pairs = judge_pairs(
            teacher, cycle, sample, references, texts["new adapter"], texts[name], name
        )
        prefs[name] = tally(pairs)
        verdicts[name] = {p.item_id: p.winner for p in pairs}
        judged += [
            {
                "cycle": cycle,
                "baseline": name,
                "candidate_ref": model_ref(student, candidate),
                "baseline_ref": model_ref(student, adapter),
                "item_id": p.item_id,
                "winner": p.winner,
                "reason": p.reason,
                "judge": teacher.teacher_id,
                "asset_version": VERSION,
            }
            for p in pairs
        ]
    store.replace_rows("explanation_judgements", pl.DataFrame(judged), cycle=cycle)
    store.replace_rows(
        "preference_results",
        pl.DataFrame(
            [
                {
                    "cycle": cycle,
                    "baseline": name,
                    "candidate_ref": model_ref(student, candidate),
                    "baseline_ref": model_ref(student, baselines[name]),
                    **p.as_row(),
                    "judge": teacher.teacher_id,
                    "asset_version": VERSION,
                }
                for name, p in prefs.items()
            ]
        ),
        cycle=cycle,
    )
    base = prefs["base model"]
    context.log.info(
        f"explanations: new adapter vs base model {base.wins}W/{base.ties}T/{base.losses}L, "
        f"differential {base.differential:+.2f} [{base.ci_low:+.2f}, {base.ci_high:+.2f}]"
    )
    deployed = next((p for n, p in prefs.items() if n != "base model"), None)
    reference_texts = {item_id: text or "(none)" for item_id, text in references.items()}
    shown = {**texts, "reference (corpus template)": reference_texts}
    return dg.MaterializeResult(
        metadata={
            "preference_vs_base": base.differential,
            **({"preference_vs_deployed": deployed.differential} if deployed else {}),
            "preference": dg.MetadataValue.md(preference_table(prefs)),
            "example_explanations": dg.MetadataValue.md(
                examples_markdown(sample, shown, verdicts, settings.examples_shown)
            ),
            "sample_items": sample.height,
            "judge": teacher.teacher_id,
            "judge_method": judge_method(teacher),
            "generation_seconds": round(seconds, 2),
            "notes": "; ".join(notes) or "none",
        }
    )


def judge_method(teacher: Teacher) -> str:
    if teacher.teacher_id.startswith("llm-teacher"):
        return "LLM judge, each pair asked in both orders (a flip is a tie)"
    return (
        f"offline proxy {proxy_name()} (flywheel_assets/teaching/explanation_judge.py): "
        "similarity to the corpus reference, names the given severity and no other, not a copy "
        "of the review; both orders"
    )
