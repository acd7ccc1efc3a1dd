"""explanation_preference: whose explanations does the judge prefer, the new adapter's or the
base model's / the previously deployed adapter's?

On a fixed, severity-stratified sample of the held-out split (the same items every cycle, never
trained on), each model explains the item's reference severity (so all explanations argue the
same claim); the teacher judges every candidate/baseline pair twice with the order swapped
(`Teacher.judge_explanations`: a verdict that flips with the order is a tie). Explanations are
cached per model and item, so the base model writes its once and a deployed adapter's are the
ones it wrote as a candidate.
"""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import polars as pl

from flywheel_assets.assets.step06_lora_adapter import lora_adapter
from flywheel_assets.assets.step07_heldout_evaluation import model_ref
from flywheel_assets.metadata import progress_logger
from flywheel_assets.partitions import cycle_asset
from flywheel_core.domain import Item, JudgeRequest
from flywheel_core.ml.explanation_prompt import DECODING
from flywheel_core.ml.student import Student
from flywheel_core.prompts import prompt_sha256, prompts_version
from flywheel_core.reporting.preference_report import examples_markdown, preference_table
from flywheel_core.settings import TeacherSettings
from flywheel_core.teaching.explanation_judge import proxy_name
from flywheel_core.teaching.judge_sample import judge_sample, sample_references
from flywheel_core.teaching.preference import PairResult, Preference, outcome, tally
from resources.artifacts.base import ArtifactStore
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore
from resources.student import StudentModel
from resources.teacher.base import Teacher

VERSION = f"1-{prompts_version('explain_severity', 'judge_explanations')}"


def explanations_of(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: Student,
    artifacts: ArtifactStore,
    sample: pl.DataFrame,
    adapter: dict | None,
    max_new_tokens: int,
) -> tuple[dict[str, str], float]:
    """item_id -> explanation written by one model (cached per model, prompt, length cap and
    decoding)."""
    ref, prompt = model_ref(student, adapter), prompt_sha256("explain_severity")
    known = store.cached_explanations(ref, prompt, max_new_tokens, DECODING)
    missing = sample.filter(~pl.col("item_id").is_in(list(known)))
    seconds = 0.0
    if missing.height:
        adapter_dir = artifacts.adapter_dir(adapter) if adapter else None
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


def judge_pairs(
    teacher: Teacher,
    settings: TeacherSettings,
    cycle: str,
    sample: pl.DataFrame,
    references: dict[str, str | None],
    candidate: dict[str, str],
    baseline: dict[str, str],
    baseline_name: str,
) -> list[PairResult]:
    """Every sampled item's candidate explanation (as A) against the baseline's (as B); pairs
    are judged concurrently up to the teacher's concurrency (an LLM endpoint's limit)."""

    def judge(row: dict) -> PairResult:
        verdict = teacher.judge_explanations(
            JudgeRequest(
                cycle=cycle,
                item=Item.model_validate(row),
                explanation_a=candidate[row["item_id"]],
                explanation_b=baseline[row["item_id"]],
                reference=references[row["item_id"]],
            ),
            settings,
        )
        winner = outcome(verdict.winner) if verdict.valid else None
        return PairResult(row["item_id"], "candidate", baseline_name, winner, verdict.reason)

    with ThreadPoolExecutor(max(1, teacher.concurrency(settings))) as pool:
        return list(pool.map(judge, sample.iter_rows(named=True)))


def baselines_of(candidate: dict, serving: dict | None) -> tuple[dict[str, dict | None], list]:
    """The models the new adapter is compared with (base always, the deployed one if another),
    and notes on what was left out."""
    baselines: dict[str, dict | None] = {"base model": None}
    notes = []
    if serving is None:
        notes.append("no adapter was deployed before this cycle: only the base model compared")
    elif serving["adapter_sha256"] == candidate["adapter_sha256"]:
        notes.append("the deployed adapter is this cycle's (no fine-tune): not compared to itself")
    else:
        baselines[f"deployed ({serving['deployed_in']})"] = serving
    return baselines, notes


def judgement_rows(cycle, name, cand_ref, base_ref, pairs, judge) -> list[dict]:
    return [
        {
            "cycle": cycle,
            "baseline": name,
            "candidate_ref": cand_ref,
            "baseline_ref": base_ref,
            "item_id": p.item_id,
            "winner": p.winner,
            "reason": p.reason,
            "judge": judge,
            "asset_version": VERSION,
        }
        for p in pairs
    ]


def judge_method(teacher: Teacher) -> str:
    if teacher.teacher_id.startswith("llm-teacher"):
        return "LLM judge, each pair asked in both orders (a flip is a tie)"
    return (
        f"offline proxy {proxy_name()} (flywheel_core/teaching/explanation_judge.py): "
        "similarity to the corpus reference, names the given severity and no other, not a copy "
        "of the review; both orders"
    )


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
    all_settings = flywheel_config.settings()
    settings, runner = all_settings.judge, student.runner(all_settings.student)
    candidate = store.adapter(cycle)
    if candidate is None:
        raise dg.Failure(f"cycle {cycle} has no adapter: materialize lora_adapter first")
    sample = judge_sample(store.heldout_items(), settings.sample_size)
    baselines, notes = baselines_of(candidate, store.serving_adapter(cycle))
    references = sample_references(sample)
    texts, seconds = {}, 0.0
    for name, adapter in {"new adapter": candidate, **baselines}.items():
        texts[name], took = explanations_of(
            context, store, runner, artifacts, sample, adapter, settings.max_new_tokens
        )
        seconds += took
    prefs: dict[str, Preference] = {}
    verdicts, judged, results = {}, [], []
    cand_ref = model_ref(runner, candidate)
    for name, adapter in baselines.items():
        pairs = judge_pairs(
            teacher,
            all_settings.teacher,
            cycle,
            sample,
            references,
            texts["new adapter"],
            texts[name],
            name,
        )
        prefs[name] = tally(pairs)
        verdicts[name] = {p.item_id: p.winner for p in pairs}
        base_ref = model_ref(runner, adapter)
        judged += judgement_rows(cycle, name, cand_ref, base_ref, pairs, teacher.teacher_id)
        results.append(
            {
                "cycle": cycle,
                "baseline": name,
                "candidate_ref": cand_ref,
                "baseline_ref": base_ref,
                **prefs[name].as_row(),
                "judge": teacher.teacher_id,
                "asset_version": VERSION,
            }
        )
    store.replace_rows("explanation_judgements", pl.DataFrame(judged), cycle=cycle)
    store.replace_rows("preference_results", pl.DataFrame(results), cycle=cycle)
    base = prefs["base model"]
    skipped = f" ({base.invalid} not judged: no valid verdict or budget spent)"
    context.log.info(
        f"explanations: new adapter vs base model {base.wins}W/{base.ties}T/{base.losses}L"
        f"{skipped if base.invalid else ''}, "
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
