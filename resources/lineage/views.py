"""Audit views over the lineage tables: an adapter's whole chain, and what a batch influenced."""

VIEWS: dict[str, str] = {
    # The deployment history is append-only: the first deploy row of each adapter, and which
    # adapter serves now (the latest deploy or rollback row).
    # Each table is scanned once per view (a MATERIALIZED CTE where it is used twice): on a
    # DuckLake every scan is a round of catalog queries, and the feedback scan reads every row.
    "adapter_deployments": """
        WITH d AS MATERIALIZED (SELECT * FROM deployments),
        first_deploy AS (
            SELECT *, row_number() OVER (
                PARTITION BY cycle, adapter_sha256 ORDER BY deployed_at) AS n
            FROM d WHERE coalesce(action, 'deploy') = 'deploy'),
        latest AS (SELECT cycle, adapter_sha256 FROM d ORDER BY deployed_at DESC LIMIT 1)
        SELECT f.cycle, f.adapter_sha256, f.model_name, f.model_version, f.deployed_at,
               f.deployed_by,
               (l.cycle IS NOT NULL) AS serving_now
        FROM first_deploy f
        LEFT JOIN latest l ON l.cycle = f.cycle AND l.adapter_sha256 = f.adapter_sha256
        WHERE f.n = 1
    """,
    # One row per cycle: its feedback file and the row counts actually stored for it.
    "feedback_batch_summary": """
        WITH acc AS (SELECT cycle, count(*) AS n FROM feedback GROUP BY cycle),
             qua AS (SELECT cycle, count(*) AS n FROM feedback_quarantine GROUP BY cycle)
        SELECT c.cycle, c.seq, b.file_name, b.uri, b.sha256 AS batch_sha256, b.received,
               coalesce(acc.n, 0) AS accepted, coalesce(qua.n, 0) AS quarantined
        FROM cycles c
        LEFT JOIN feedback_batches b ON b.cycle = c.cycle
        LEFT JOIN acc ON acc.cycle = c.cycle
        LEFT JOIN qua ON qua.cycle = c.cycle
    """,
    "adapter_lineage": """
        WITH cy AS MATERIALIZED (SELECT cycle, seq FROM cycles),
        s AS MATERIALIZED (SELECT * FROM feedback_batch_summary),
        ex AS MATERIALIZED (
            SELECT cycle, any_value(exam_id) AS exam_id, count(*) AS questions,
                   any_value(teacher) AS teacher, any_value(prompt_sha256) AS prompt_sha256
            FROM exams GROUP BY cycle),
        cu AS (
            SELECT cycle, any_value(asset_version) AS asset_version, count(*) AS size
            FROM curricula GROUP BY cycle)
        SELECT a.adapter_sha256, a.cycle, c.seq, a.uri, a.base_model, a.init_adapter_sha256,
               (SELECT list({'cycle': s.cycle, 'file': s.file_name, 'sha256': s.batch_sha256,
                             'received': s.received, 'accepted': s.accepted,
                             'quarantined': s.quarantined} ORDER BY s.seq)
                FROM s WHERE s.seq <= c.seq) AS feedback_batches,
               (SELECT sum(s.accepted) FROM s WHERE s.seq <= c.seq) AS feedback_rows,
               (SELECT list(e.exam_id ORDER BY cc.seq) FROM ex e JOIN cy cc USING (cycle)
                WHERE cc.seq <= c.seq) AS exam_ids,
               ex.exam_id, ex.questions AS exam_questions, ex.teacher,
               ex.prompt_sha256 AS exam_prompt_sha256,
               ev.accuracy AS exam_accuracy, ev.macro_f1 AS exam_macro_f1, ev.proficiency,
               ev.prompt_sha256 AS evaluation_prompt_sha256,
               a.curriculum_cycle, cu.asset_version AS curriculum_version,
               a.curriculum_size, a.steps, a.final_loss, a.train_seconds, a.config,
               a.training_prompts,
               h.accuracy AS heldout_accuracy, h.macro_f1 AS heldout_macro_f1,
               d.model_name, d.model_version, d.deployed_at,
               coalesce(d.serving_now, false) AS serving_now, a.created_at,
               a.asset_version AS adapter_version
        FROM adapters a
        JOIN cy c ON c.cycle = a.cycle
        LEFT JOIN ex ON ex.cycle = a.cycle
        LEFT JOIN evaluations ev ON ev.cycle = a.cycle
        LEFT JOIN cu ON cu.cycle = a.curriculum_cycle
        LEFT JOIN heldout_results h ON h.cycle = a.cycle AND h.role = 'candidate'
            AND coalesce(h.eval_set, 'seed') = 'seed'
        LEFT JOIN adapter_deployments d
            ON d.cycle = a.cycle AND d.adapter_sha256 = a.adapter_sha256
    """,
    # What a cycle's batch really went into: the curricula holding rows it added (its reviewer
    # feedback, its teacher examples), and the adapters trained on those curricula.
    "feedback_influence": """
        WITH used AS (
            SELECT cycle AS curriculum_cycle, added_in_cycle,
                   count(*) FILTER (WHERE origin = 'feedback') AS feedback_rows_used,
                   count(*) AS rows_used
            FROM curricula GROUP BY 1, 2)
        SELECT s.cycle AS batch_cycle, s.file_name, s.batch_sha256, s.accepted,
               u.feedback_rows_used, u.rows_used,
               a.cycle AS adapter_cycle, ca.seq AS adapter_seq, a.adapter_sha256,
               d.model_name, d.model_version, d.deployed_at, d.model_version IS NOT NULL
                   AS deployed, coalesce(d.serving_now, false) AS serving_now
        FROM feedback_batch_summary s
        JOIN used u ON u.added_in_cycle = s.cycle
        JOIN adapters a ON a.curriculum_cycle = u.curriculum_cycle
        JOIN cycles ca ON ca.cycle = a.cycle
        LEFT JOIN adapter_deployments d
            ON d.cycle = a.cycle AND d.adapter_sha256 = a.adapter_sha256
    """,
}


def view_statements() -> list[str]:
    return [f"CREATE OR REPLACE VIEW {name} AS {sql.strip()}" for name, sql in VIEWS.items()]
