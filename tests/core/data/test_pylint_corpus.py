"""Protects the pylint seed corpus: pinned sdist, leak-free code and reviews, stable ids/split."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from flywheel_core.data import pylint_corpus as pc

MARKER_RE = re.compile(r"#\s*(?:[+-]?\d+\s*:\s*)?\[[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*\]")
MSGID_RE = re.compile(r"\b[CRWEIF]\d{4}\b")
CATEGORY_WORDS_RE = re.compile(r"\b(?:error|warning|convention|refactor|fatal|info)\b", re.I)


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    """Shared download/parquet cache, so CI fetches the sdist once."""
    path = Path(os.environ.get("FLYWHEEL_CACHE", "~/.cache/flywheel")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def corpus(cache_dir: Path) -> pl.DataFrame:
    return pc.load_or_build_seed_corpus(cache_dir)


def test_schema_and_size(corpus: pl.DataFrame) -> None:
    assert corpus.schema == pl.Schema(pc.SCHEMA)
    assert 400 <= corpus.height <= 480  # 443 for pylint 4.1.4
    assert corpus["item_id"].n_unique() == corpus.height
    assert set(corpus["source"].unique()) == {"pylint"}
    for col in ("item_id", "rule", "msgid", "category", "severity", "code", "review", "split"):
        assert corpus[col].null_count() == 0, col


def test_severity_follows_category(corpus: pl.DataFrame) -> None:
    assert set(corpus["severity"].unique()) == set(pc.SEVERITIES)
    for row in corpus.select("msgid", "category", "severity").iter_rows(named=True):
        assert row["msgid"][0] == row["category"]
        assert pc.SEVERITY_BY_CATEGORY[row["category"]] == row["severity"]
    assert pc.SEVERITY_BY_CATEGORY["F"] == "critical"


def test_code_has_no_answer_markers(corpus: pl.DataFrame) -> None:
    for item_id, code in corpus.select("item_id", "code").iter_rows():
        assert code.strip(), item_id
        assert not MARKER_RE.search(code), item_id
        assert "# [" not in code, item_id


def test_code_keeps_whitespace_defects(corpus: pl.DataFrame) -> None:
    code = dict(corpus.select("item_id", "code").iter_rows())
    assert not code["pylint:missing-final-newline:1"].endswith("\n")
    assert "\r\n" in code["pylint:mixed-line-endings"]
    assert 'print("Hello")   \n' in code["pylint:trailing-whitespace"]
    ordinary = code["pylint:undefined-variable"]
    assert ordinary.endswith("\n") and not ordinary.endswith("\n\n")


def test_review_does_not_leak_label(corpus: pl.DataFrame) -> None:
    for row in corpus.iter_rows(named=True):
        review = row["review"]
        assert len(review) >= 20, row["item_id"]
        assert row["msgid"] not in review, row["item_id"]
        assert not MSGID_RE.search(review), row["item_id"]
        assert row["rule"] not in review.lower(), row["item_id"]
        assert not CATEGORY_WORDS_RE.search(review), (row["item_id"], review)
        assert "%s" not in review and "%r" not in review, row["item_id"]


def test_review_is_reviewer_style() -> None:
    info = pc.MessageInfo(
        symbol="undefined-variable",
        msgid="E0602",
        description="Used when an undefined variable is accessed.",
        template="Undefined variable %r",
    )
    review = pc.build_review(info, "pylint:undefined-variable")
    assert review.endswith("an undefined variable is accessed.")  # headline would repeat it
    assert "Used when" not in review
    info = pc.MessageInfo(
        "unused-argument",
        "W0613",
        "Used when a function argument is not used.",
        "Unused argument %r",
    )
    assert pc.build_review(info, "x").startswith("Unused argument. ")


def test_template_headline() -> None:
    assert pc.template_headline("Undefined variable %r") == "Undefined variable"
    assert pc.template_headline("Too many arguments (%s/%s)") == "Too many arguments"
    assert pc.template_headline("Using global for %r but no assignment is done") is None
    assert pc.template_headline('"%s" not documented as being raised') is None


def test_strip_markers() -> None:
    assert pc.strip_markers("x = 1  # [unused-variable, invalid-name]\n") == "x = 1\n"
    assert pc.strip_markers("# +1: [line-too-long]\nx = 1  # keep me\n") == "x = 1  # keep me\n"
    assert (
        pc.strip_markers("a = [1]  # comment # [use-a-generator]  \n\n\n") == "a = [1]  # comment\n"
    )
    kept = pc.strip_markers("a = 1\r\nb = 2\n# [missing-final-newline]", keep_whitespace=True)
    assert kept == "a = 1\r\nb = 2"


def test_split_is_stratified_and_per_rule(corpus: pl.DataFrame) -> None:
    assert set(corpus["split"].unique()) == {"train", "heldout"}
    for severity in pc.SEVERITIES:
        rules = (
            corpus.filter(pl.col("severity") == severity)
            .group_by("rule")
            .agg(pl.col("split").n_unique().alias("n_splits"), pl.col("split").first())
        )
        assert rules["n_splits"].max() == 1  # siblings of one message never straddle the split
        frac = (rules["split"] == "heldout").mean()
        assert abs(frac - pc.HELDOUT_FRACTION) < 0.03, (severity, frac)


def test_split_is_stable_when_rules_are_added() -> None:
    rules = [f"rule-{i}" for i in range(100)]
    before = pc.assign_splits({"major": rules})
    after = pc.assign_splits({"major": [*rules, "brand-new-rule"]})
    moved = [r for r in rules if before[r] != after[r]]
    assert len(moved) <= 1


def test_build_is_deterministic(corpus: pl.DataFrame, cache_dir: Path) -> None:
    fresh = pc.build_seed_corpus(cache_dir)
    assert fresh.equals(corpus)
    ordered = corpus.sort("rule", maintain_order=True)  # rows come sorted by rule
    assert ordered["item_id"].to_list() == corpus["item_id"].to_list()
    assert {"pylint:undefined-variable", "pylint:abstract-method:1"} <= set(corpus["item_id"])
    for code, review, digest in corpus.select("code", "review", "content_sha256").iter_rows():
        assert hashlib.sha256(f"{code}\n{review}".encode()).hexdigest() == digest


def test_warm_load_uses_parquet_cache(corpus: pl.DataFrame, cache_dir: Path) -> None:
    assert pc.corpus_cache_path(cache_dir).is_file()
    start = time.perf_counter()
    again = pc.load_or_build_seed_corpus(cache_dir)
    assert time.perf_counter() - start < 2.0
    assert again.equals(corpus)


def test_verify_sha256_reports_file_and_hashes(tmp_path: Path) -> None:
    bogus = tmp_path / "pylint-4.1.4.tar.gz"
    bogus.write_bytes(b"not a tarball")
    actual = hashlib.sha256(b"not a tarball").hexdigest()
    with pytest.raises(RuntimeError) as excinfo:
        pc.verify_sha256(bogus, pc.PYLINT_SDIST_SHA256)
    message = str(excinfo.value)
    assert str(bogus) in message and pc.PYLINT_SDIST_SHA256 in message and actual in message
    pc.verify_sha256(bogus, actual)  # matching hash: no error


def test_fetch_replaces_corrupt_cache_without_network(
    tmp_path: Path, cache_dir: Path, corpus: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    good_sdist = pc.sdist_cache_path(cache_dir)  # verified by the corpus fixture
    target = pc.sdist_cache_path(tmp_path)
    target.write_bytes(b"corrupted")
    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        shutil.copy(good_sdist, Path(cmd[cmd.index("-d") + 1]) / target.name)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(pc.subprocess, "run", fake_pip)
    assert pc.fetch_pylint_sdist(tmp_path) == target
    assert pc.sha256_file(target) == pc.PYLINT_SDIST_SHA256
    assert len(calls) == 1 and "--no-binary=:all:" in calls[0]
    assert f"pylint=={pc.PYLINT_VERSION}" in calls[0]
    pc.fetch_pylint_sdist(tmp_path)  # now cached and valid: pip is not called again
    assert len(calls) == 1


def test_fetch_rejects_bad_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_pip_tampered(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        (Path(cmd[cmd.index("-d") + 1]) / f"pylint-{pc.PYLINT_VERSION}.tar.gz").write_bytes(b"x")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(pc.subprocess, "run", fake_pip_tampered)
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        pc.fetch_pylint_sdist(tmp_path)
    assert not pc.sdist_cache_path(tmp_path).exists()

    def fake_pip_fails(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(pc.subprocess, "run", fake_pip_fails)
    with pytest.raises(RuntimeError, match="No matching distribution found"):
        pc.fetch_pylint_sdist(tmp_path)
