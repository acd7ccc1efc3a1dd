"""Reads across cycles: the data pool, the held-out split, and what earlier cycles left behind."""

from __future__ import annotations

import json

import polars as pl

from flywheel_core.domain import Item
from flywheel_core.teaching.stopping import TrainingHistory

ITEM_COLUMNS = [
    "item_id",
    "source",
    "code",
    "review",
    "severity",
    "explanation",
    "explanation_source",
    "good_code",
    "details",
]


def to_items(frame: pl.DataFrame) -> list[Item]:
    return [Item.model_validate(row) for row in frame.select(ITEM_COLUMNS).iter_rows(named=True)]


class CycleQueries:
    """Mixed into `LineageStore`: every per-cycle read an asset makes."""

    # -- the data ----------------------------------------------------------------------------
    def training_pool(self, cycle: str) -> pl.DataFrame:
        """The teacher's data source: the seed corpus's train split + feedback up to this cycle
        (without the feedback rows held out for the reviewers' evaluation set)."""
        return self.query(
            """
            SELECT item_id, source, code, review, severity, NULL AS explanation,
                   NULL AS explanation_source, good_code, details
            FROM seed_corpus WHERE split = 'train'
            UNION ALL
            SELECT f.item_id, 'feedback' AS source, f.code, f.review, f.severity, f.explanation,
                   CASE WHEN f.explanation IS NULL THEN NULL ELSE 'reviewer' END,
                   NULL AS good_code, NULL AS details
            FROM feedback f JOIN cycles c ON c.cycle = f.cycle
            WHERE c.seq <= (SELECT seq FROM cycles WHERE cycle = ?)
              AND NOT coalesce(f.heldout, false)
            ORDER BY item_id
            """,
            [cycle],
        )

    def training_pool_items(self, cycle: str) -> list[Item]:
        return to_items(self.training_pool(cycle))

    def heldout_items(self, max_items: int | None = None) -> pl.DataFrame:
        """The fixed held-out split no training step ever sees (optionally a fixed prefix)."""
        frame = self.query(
            "SELECT item_id, source, code, review, severity, good_code, details FROM seed_corpus "
            "WHERE split = 'heldout' ORDER BY item_id"
        )
        return frame if max_items is None else frame.head(max_items)

    def reviewer_heldout_items(self, cycle: str) -> pl.DataFrame:
        """The reviewers' held-out set at this cycle: every accepted feedback row held out of
        training in this cycle's batch or an earlier one."""
        return self.query(
            """
            SELECT f.item_id, 'feedback' AS source, f.code, f.review, f.severity
            FROM feedback f JOIN cycles c ON c.cycle = f.cycle
            WHERE c.seq <= (SELECT seq FROM cycles WHERE cycle = ?) AND f.heldout
            ORDER BY f.item_id
            """,
            [cycle],
        )

    def seed_train_examples(self) -> pl.DataFrame:
        """The seed corpus's train split as uniform-weight training rows (the flat baseline)."""
        return self.query(
            "SELECT code, review, severity, 1.0 AS weight FROM seed_corpus WHERE split = 'train'"
        )

    # -- exam, answers, evaluation ---------------------------------------------------------------
    def exam_questions(self, cycle: str) -> pl.DataFrame:
        return self.query("SELECT * FROM exams WHERE cycle = ? ORDER BY question_no", [cycle])

    def graded_questions(self, cycle: str) -> pl.DataFrame:
        """The cycle's exam questions with the student's answers."""
        return self.query(
            """
            SELECT e.exam_id, e.question_no, e.item_id, e.source, e.code, e.review, e.severity,
                   a.predicted
            FROM exams e JOIN answers a
              ON a.cycle = e.cycle AND a.exam_id = e.exam_id AND a.question_no = e.question_no
            WHERE e.cycle = ? ORDER BY e.question_no
            """,
            [cycle],
        )

    def evaluation(self, cycle: str) -> dict | None:
        """The cycle's exam evaluation, `per_class` decoded (None before it exists)."""
        rows = self.query("SELECT * FROM evaluations WHERE cycle = ?", [cycle])
        if rows.is_empty():
            return None
        row = rows.row(0, named=True)
        return {**row, "per_class": json.loads(row["per_class"])}

    def previous_evaluation(self, cycle: str) -> dict | None:
        prev = self.predecessor(cycle)
        return None if prev is None else self.evaluation(prev)

    # -- curriculum ----------------------------------------------------------------------------
    def previous_curriculum(self, cycle: str) -> tuple[str | None, pl.DataFrame]:
        prev = self.predecessor(cycle)
        frame = self.query(
            "SELECT * FROM curricula WHERE cycle = ? ORDER BY example_id", [prev or ""]
        )
        return prev, frame

    def new_curriculum_rows(self, cycle: str) -> pl.DataFrame:
        """This cycle's additions: its teacher examples, and the accepted reviewer feedback of
        this and EVERY earlier cycle (arrival order), minus the rows held out for evaluation, so
        no batch drops out of the curriculum even when its cycle ran after a later one; rows
        already in the previous curriculum keep their first occurrence there."""
        return self.query(
            """
            SELECT item_id, 'teacher' AS origin, cycle AS added_in_cycle, code, review, severity,
                   explanation, explanation_source
            FROM teacher_examples WHERE cycle = ?
            UNION ALL
            SELECT * FROM (
                SELECT f.item_id, 'feedback' AS origin, f.cycle AS added_in_cycle, f.code,
                       f.review, f.severity, f.explanation,
                       CASE WHEN f.explanation IS NULL THEN NULL ELSE 'reviewer' END
                FROM feedback f JOIN cycles c ON c.cycle = f.cycle
                WHERE c.seq <= (SELECT seq FROM cycles WHERE cycle = ?)
                  AND NOT coalesce(f.heldout, false)
                ORDER BY c.seq, f.line_no)
            """,
            [cycle, cycle],
        )

    def curriculum_examples(self, cycle: str) -> pl.DataFrame:
        """The cycle's curriculum as training rows (the fine-tune's input file); ``new`` marks
        the examples this cycle added (the trainer mixes them with replayed earlier ones)."""
        return self.query(
            "SELECT code, review, severity, weight, explanation, added_in_cycle = cycle AS new "
            "FROM curricula WHERE cycle = ? ORDER BY example_id",
            [cycle],
        )

    def explanation_sources(self, cycle: str | None) -> dict[str, int]:
        """Who wrote a curriculum's reference explanations (rows without one: severity only)."""
        counts = self.query(
            "SELECT coalesce(explanation_source, 'none (severity only)') AS source, count(*) AS n "
            "FROM curricula WHERE cycle = ? GROUP BY 1 ORDER BY 1",
            [cycle or ""],
        )
        return dict(zip(counts["source"], counts["n"], strict=True))

    # -- adapters ------------------------------------------------------------------------------
    def adapter(self, cycle: str) -> dict | None:
        """The adapter row of a cycle (None before `lora_adapter` ran)."""
        rows = self.query("SELECT * FROM adapters WHERE cycle = ?", [cycle])
        return None if rows.is_empty() else rows.row(0, named=True)

    def previous_adapter(self, cycle: str) -> dict | None:
        prev = self.predecessor(cycle)
        return None if prev is None else self.adapter(prev)

    def adapters_in_order(self) -> pl.DataFrame:
        return self.query("SELECT a.* FROM adapters a JOIN cycles c USING (cycle) ORDER BY c.seq")

    def serving_adapter(self, cycle: str) -> dict | None:
        """The adapter deployed when this cycle started (None: the base model serves).

        The latest deployment event (a deploy, or a rollback re-pointing to an earlier cycle's
        version) recorded for an earlier cycle wins.
        """
        rows = self.query(
            """
            SELECT d.cycle AS deployed_in, d.model_version, a.adapter_sha256, a.uri
            FROM deployments d
            JOIN adapters a ON a.adapter_sha256 = d.adapter_sha256 AND a.cycle = d.cycle
            JOIN cycles c ON c.cycle = d.cycle
            WHERE c.seq < ? ORDER BY d.deployed_at DESC LIMIT 1
            """,
            [self.cycle_seq(cycle)],
        )
        return None if rows.is_empty() else rows.row(0, named=True)

    def training_history(self, cycle: str) -> TrainingHistory:
        """Steps, CUDA seconds and held-out accuracies of the fine-tunes before ``cycle``."""
        seq = self.cycle_seq(cycle)
        spent = self.query(
            """
            SELECT coalesce(sum(a.steps), 0) AS steps,
                   coalesce(sum(a.train_seconds) FILTER (WHERE a.device = 'cuda'), 0) AS gpu_s
            FROM adapters a JOIN cycles c USING (cycle)
            WHERE c.seq < ? AND a.finetune_skipped_reason IS NULL
            """,
            [seq],
        ).row(0, named=True)
        results = self.query(
            """
            SELECT r.role, r.accuracy FROM heldout_results r
            JOIN cycles c USING (cycle) JOIN adapters a USING (cycle)
            WHERE c.seq < ? AND a.finetune_skipped_reason IS NULL
              AND coalesce(r.decides, coalesce(r.eval_set, 'seed') = 'seed')
            ORDER BY c.seq
            """,
            [seq],
        )
        incoming = results.filter(pl.col("role") == "incoming")["accuracy"].head(1).to_list()
        candidates = results.filter(pl.col("role") == "candidate")["accuracy"].to_list()
        return TrainingHistory(
            accuracies=incoming + candidates,
            steps=int(spent["steps"]),
            gpu_seconds=float(spent["gpu_s"]),
        )

    # -- held-out evaluation ---------------------------------------------------------------------
    def heldout_predictions(self, model_ref: str) -> pl.DataFrame:
        """Cached held-out answers of one model (base id or adapter sha256)."""
        return self.query(
            "SELECT item_id, severity, predicted FROM heldout_scores WHERE model_ref = ?",
            [model_ref],
        )

    def heldout_comparisons(self, cycle: str) -> dict[str, dict]:
        """eval_set -> the cycle's comparison on it: {"incoming": score, "candidate": score,
        "delta", "delta_low", "delta_high"} (scores with `per_class`, `answers` and
        `class_shares` decoded), as `heldout_sets.compare_on_set` built it. `incoming` is the
        model the candidate was compared with: the model serving now when a newer deployment
        than the cycle's starting model existed (then `started_with` holds the latter)."""
        rows = self.query(
            "SELECT * EXCLUDE (eval_set), coalesce(eval_set, 'seed') AS eval_set "
            "FROM heldout_results WHERE cycle = ?",
            [cycle],
        )
        comparisons: dict[str, dict] = {}
        for row in rows.iter_rows(named=True):
            score = {
                **row,
                "n": row["items"],
                "per_class": json.loads(row["per_class"]),
                **{k: json.loads(row[k] or "{}") for k in ("answers", "class_shares")},
            }
            entry = comparisons.setdefault(row["eval_set"], {})
            entry[row["role"]] = score
            if row["role"] == "candidate":
                entry.update({k: row[k] for k in ("delta", "delta_low", "delta_high")})
        for entry in comparisons.values():
            if "serving" in entry:  # a backfilled cycle: compared with the model serving now
                entry["started_with"], entry["incoming"] = entry["incoming"], entry["serving"]
        return comparisons

    def heldout_reports(self, cycle: str, eval_set: str = "seed") -> dict[str, dict]:
        """role (incoming | candidate | serving) -> the cycle's result on one evaluation set."""
        rows = self.query(
            "SELECT role, model_ref, accuracy, macro_f1, per_class FROM heldout_results "
            "WHERE cycle = ? AND coalesce(eval_set, 'seed') = ?",
            [cycle, eval_set],
        )
        return {
            row["role"]: {**row, "per_class": json.loads(row["per_class"])}
            for row in rows.iter_rows(named=True)
        }

    def heldout_history(self, cycle: str | None = None, eval_set: str = "seed") -> pl.DataFrame:
        """Held-out results on one evaluation set of every cycle up to ``cycle`` (all when
        None), in cycle order."""
        where = "AND c.seq <= (SELECT seq FROM cycles WHERE cycle = ?)" if cycle else ""
        return self.query(
            f"""
            SELECT r.cycle, r.role, r.model_ref, r.items, r.accuracy, r.macro_f1,
                   r.accuracy_low, r.accuracy_high, r.majority
            FROM heldout_results r JOIN cycles c ON c.cycle = r.cycle
            WHERE coalesce(r.eval_set, 'seed') = ? {where} ORDER BY c.seq, r.role DESC
            """,
            [eval_set, cycle] if cycle else [eval_set],
        )

    # -- explanations ----------------------------------------------------------------------------
    def cached_explanations(
        self, model_ref: str, prompt_sha256: str, max_new_tokens: int, decoding: str
    ) -> dict[str, str]:
        """item_id -> explanation a model wrote under this prompt, length cap and decoding."""
        rows = self.query(
            "SELECT item_id, explanation FROM explanations WHERE model_ref = ? "
            "AND prompt_sha256 = ? AND max_new_tokens = ? AND decoding = ?",
            [model_ref, prompt_sha256, max_new_tokens, decoding],
        )
        return dict(zip(rows["item_id"], rows["explanation"], strict=True))

    def preference_history(self) -> pl.DataFrame:
        return self.query(
            """
            SELECT p.cycle, p.baseline, p.wins, p.ties, p.losses, p.differential, p.ci_low,
                   p.ci_high, p.judge, p.invalid
            FROM preference_results p JOIN cycles c USING (cycle) ORDER BY c.seq, p.baseline
            """
        )
