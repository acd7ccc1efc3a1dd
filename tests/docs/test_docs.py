"""Protects the documentation: a short README that links every docs page, and no link or file
name in the README or docs/ that points at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted((REPO / "docs").glob("*.md"))
DOCUMENTS = [REPO / "README.md", *PAGES]
TOP_LEVEL = (
    "flywheel_core/",
    "flywheel_assets/",
    "flywheel_cli/",
    "resources/",
    "prompts/",
    "triton_models/",
    "tests/",
    "benchmarks/",
    "docs/",
    "deploy/",
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE = re.compile(r"`([^`\s]+)`")


def test_readme_is_an_introduction():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) < 250


def test_every_docs_page_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert PAGES
    for page in PAGES:
        assert f"](docs/{page.name})" in readme, f"README does not link docs/{page.name}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_links_and_file_names_exist(document: Path):
    text = document.read_text(encoding="utf-8")
    missing = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        if not (document.parent / target).exists():
            missing.append(f"link {target}")
    for token in CODE.findall(text):
        path = token.rstrip(",.:;)")
        if not path.startswith(TOP_LEVEL) or any(c in path for c in "*<>{}$"):
            continue
        if "NN" in path:  # a pattern such as stepNN_<asset>.py
            continue
        if not (REPO / path.split("::")[0]).exists():
            missing.append(f"file {path}")
    assert not missing, f"{document.name}: {missing}"
