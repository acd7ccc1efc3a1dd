"""DDL of the lineage store: every per-cycle row carries its cycle and the asset version.

The same tables and views on both backends; DuckLake has no PRIMARY KEY / UNIQUE constraints
(the one key, `cycles.cycle`, is kept unique by `register_cycle`'s serialized transaction).
"""

import hashlib

from resources.lineage.views import view_statements

TABLES: dict[str, str] = {
    "cycles": """
        cycle VARCHAR PRIMARY KEY, seq INTEGER NOT NULL, registered_at TIMESTAMP NOT NULL
    """,
    "seed_corpus": """
        item_id VARCHAR, source VARCHAR, rule VARCHAR, msgid VARCHAR, category VARCHAR,
        severity VARCHAR, code VARCHAR, review VARCHAR, good_code VARCHAR, details VARCHAR,
        split VARCHAR, content_sha256 VARCHAR
    """,
    "feedback": """
        cycle VARCHAR, item_id VARCHAR, line_no INTEGER, code VARCHAR, review VARCHAR,
        severity VARCHAR, explanation VARCHAR, author VARCHAR, content_sha256 VARCHAR,
        source_file VARCHAR, asset_version VARCHAR
    """,
    "feedback_batches": """
        cycle VARCHAR, file_name VARCHAR, uri VARCHAR, sha256 VARCHAR, size_bytes BIGINT,
        signature VARCHAR, registered_at TIMESTAMP, received INTEGER, accepted INTEGER,
        quarantined INTEGER, asset_version VARCHAR
    """,
    "feedback_quarantine": """
        cycle VARCHAR, line_no INTEGER, raw VARCHAR, reason VARCHAR, source_file VARCHAR,
        asset_version VARCHAR
    """,
    "exams": """
        cycle VARCHAR, exam_id VARCHAR, question_no INTEGER, item_id VARCHAR, source VARCHAR,
        code VARCHAR, review VARCHAR, severity VARCHAR, teacher VARCHAR, prompt_sha256 VARCHAR,
        asset_version VARCHAR
    """,
    "answers": """
        cycle VARCHAR, exam_id VARCHAR, question_no INTEGER, item_id VARCHAR, predicted VARCHAR,
        p_critical DOUBLE, p_major DOUBLE, p_minor DOUBLE, p_trivial DOUBLE, student VARCHAR,
        adapter_sha256 VARCHAR, asset_version VARCHAR
    """,
    "evaluations": """
        cycle VARCHAR, exam_id VARCHAR, accuracy DOUBLE, macro_f1 DOUBLE, proficiency INTEGER,
        feedback VARCHAR, per_class VARCHAR, confusion VARCHAR, teacher VARCHAR,
        prompt_sha256 VARCHAR, asset_version VARCHAR
    """,
    "teacher_examples": """
        cycle VARCHAR, item_id VARCHAR, source VARCHAR, code VARCHAR, review VARCHAR,
        severity VARCHAR, teacher VARCHAR, asset_version VARCHAR
    """,
    "curricula": """
        cycle VARCHAR, example_id VARCHAR, item_id VARCHAR, origin VARCHAR, added_in_cycle VARCHAR,
        code VARCHAR, review VARCHAR, severity VARCHAR, weight DOUBLE, asset_version VARCHAR
    """,
    "adapters": """
        cycle VARCHAR, adapter_sha256 VARCHAR, uri VARCHAR, base_model VARCHAR,
        init_adapter_sha256 VARCHAR, curriculum_cycle VARCHAR, curriculum_size INTEGER,
        steps INTEGER, final_loss DOUBLE, train_seconds DOUBLE, config VARCHAR,
        created_at TIMESTAMP, asset_version VARCHAR, data_version VARCHAR, device VARCHAR,
        finetune_skipped_reason VARCHAR
    """,
    "heldout_scores": """
        model_ref VARCHAR, item_id VARCHAR, severity VARCHAR, predicted VARCHAR
    """,
    "heldout_results": """
        cycle VARCHAR, role VARCHAR, model_ref VARCHAR, items INTEGER, accuracy DOUBLE,
        macro_f1 DOUBLE, per_class VARCHAR, asset_version VARCHAR
    """,
    "deployments": """
        cycle VARCHAR, adapter_sha256 VARCHAR, model_name VARCHAR, model_version INTEGER,
        repository VARCHAR, deployed_at TIMESTAMP, asset_version VARCHAR, served BOOLEAN,
        action VARCHAR, deployed_by VARCHAR
    """,
    "explanations": """
        model_ref VARCHAR, item_id VARCHAR, severity VARCHAR, explanation VARCHAR,
        prompt_sha256 VARCHAR, max_new_tokens INTEGER, decoding VARCHAR, seconds DOUBLE
    """,
    "explanation_judgements": """
        cycle VARCHAR, baseline VARCHAR, candidate_ref VARCHAR, baseline_ref VARCHAR,
        item_id VARCHAR, winner VARCHAR, reason VARCHAR, judge VARCHAR, asset_version VARCHAR
    """,
    "preference_results": """
        cycle VARCHAR, baseline VARCHAR, candidate_ref VARCHAR, baseline_ref VARCHAR,
        pairs INTEGER, wins INTEGER, ties INTEGER, losses INTEGER, invalid INTEGER,
        differential DOUBLE, ci_low DOUBLE, ci_high DOUBLE, judge VARCHAR, asset_version VARCHAR
    """,
    "teacher_quarantine": """
        cycle VARCHAR, asset VARCHAR, call_key VARCHAR, item_index INTEGER, raw VARCHAR,
        reason VARCHAR, asset_version VARCHAR
    """,
    "teacher_cache": """
        key VARCHAR PRIMARY KEY, model VARCHAR, response VARCHAR, output_mode VARCHAR,
        prompt_tokens INTEGER, completion_tokens INTEGER, created_at TIMESTAMP
    """,
    "teacher_ledger": """
        cycle VARCHAR, asset VARCHAR, call_key VARCHAR, cache_key VARCHAR, model VARCHAR,
        prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd DOUBLE, cached BOOLEAN,
        retries INTEGER, outcome VARCHAR, called_at TIMESTAMP
    """,
}


# Columns added after a table's first release: stores created earlier get them on connect.
ADDED_COLUMNS: dict[str, list[str]] = {
    # data_version: sha256 of the curriculum file trained on; device: cpu | cuda;
    # finetune_skipped_reason: set when the stopping rule re-used the previous adapter.
    "adapters": [
        "data_version VARCHAR",
        "device VARCHAR",
        "finetune_skipped_reason VARCHAR",
        # training_prompts: JSON {prompt name: sha256} of the prompts the examples were built with
        "training_prompts VARCHAR",
    ],
    # served: whether Triton loaded the version; action: deploy | rollback.
    # deployed_by: who moved serving (the Dagster run of deployed_student, or `flywheel rollback`).
    "deployments": ["served BOOLEAN", "action VARCHAR", "deployed_by VARCHAR"],
    # The explanation task: the reference explanation and who wrote it (llm-teacher/<model>,
    # corpus-template/1 or reviewer).
    "teacher_examples": ["explanation VARCHAR", "explanation_source VARCHAR"],
    "curricula": ["explanation VARCHAR", "explanation_source VARCHAR"],
    # decoding: how the explanation was generated (part of the explanations cache key).
    "explanations": ["decoding VARCHAR"],
    # heldout: kept out of training for the reviewers' held-out set (by content hash).
    "feedback": ["heldout BOOLEAN"],
    # One row per cycle, evaluation set and role: the set, 95% intervals, the set's majority
    # class share, answer and class shares (JSON), the paired difference candidate - incoming
    # (candidate rows) and whether the gate decided on this set.
    "heldout_results": [
        "eval_set VARCHAR",
        "accuracy_low DOUBLE",
        "accuracy_high DOUBLE",
        "macro_f1_low DOUBLE",
        "macro_f1_high DOUBLE",
        "majority DOUBLE",
        "answers VARCHAR",
        "class_shares VARCHAR",
        "delta DOUBLE",
        "delta_low DOUBLE",
        "delta_high DOUBLE",
        "decides BOOLEAN",
    ],
    # redactions: secrets replaced in the call's prompt before it left.
    "teacher_ledger": ["redactions INTEGER"],
}


def migration_statements() -> list[str]:
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
        for table, columns in ADDED_COLUMNS.items()
        for column in columns
    ]


def _columns(cols: str, backend: str) -> str:
    cols = " ".join(cols.split())
    return cols.replace(" PRIMARY KEY", " NOT NULL") if backend == "ducklake" else cols


def create_statements(backend: str = "duckdb") -> list[str]:
    """Every table (with the columns added since), then the views, for `duckdb` | `ducklake`."""
    tables = [
        f"CREATE TABLE IF NOT EXISTS {name} ({_columns(cols, backend)})"
        for name, cols in TABLES.items()
    ]
    return tables + migration_statements() + view_statements()


# The store remembers the hash of the DDL it was last brought up to, and an open skips the DDL
# when it matches (one read instead of ~45 statements). A DuckLake records every DDL statement as
# a snapshot and concurrent DDL conflicts; the DuckDB file is re-opened for every read (it is
# released between reads for other processes), and its DDL rewrote the file each time.
SCHEMA_TABLE = "lineage_schema"


def ddl_sha256(backend: str) -> str:
    return hashlib.sha256("\n".join(create_statements(backend)).encode()).hexdigest()


def schema_is_current(con, backend: str) -> bool:
    """Whether the store already holds this DDL (by hash). Reads only this store: a
    catalog-wide listing would touch every lake the process has attached."""
    import duckdb

    try:
        rows = con.execute(f"SELECT ddl_sha256 FROM {SCHEMA_TABLE}").fetchall()
    except duckdb.CatalogException:
        return False  # a new lake
    return (ddl_sha256(backend),) in rows


def upgrade_schema(con, backend: str) -> None:
    """Bring the store to this DDL and record its hash (inside the caller's transaction)."""
    for statement in create_statements(backend):
        con.execute(statement)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (ddl_sha256 VARCHAR, applied_at TIMESTAMP)"
    )
    con.execute(f"DELETE FROM {SCHEMA_TABLE}")
    con.execute(f"INSERT INTO {SCHEMA_TABLE} VALUES (?, now())", [ddl_sha256(backend)])
