"""Head discovery on the real SmolLM2-135M-Instruct (integration tier; small probes to stay fast)."""

import pytest

from interp import heads

pytestmark = pytest.mark.integration

KNOWN_INDUCTION = {(18, 6), (17, 3), (17, 4), (18, 7)}  # layers 17-18; 18.6 scores ~0.9 on repeated tokens


def test_induction_heads_are_found_and_causal(smollm2):
    report = heads.detect(smollm2, kinds=["induction"], repeat_batch=4, repeat_half=30, validation_batch=4, draws=3,
                          progress=False)
    top = report.top("induction", 3)
    assert top[0][:2] == (18, 6) and top[0].score > 0.7, top
    assert {h[:2] for h in top} <= KNOWN_INDUCTION
    assert report.details["induction"]["copying_score"][18, 6] > 0  # it raises the attended token's logit
    v = report.validation["induction"]
    assert v.causal and v.ratio is not None and v.ratio > 3, v.verdict  # several times the random heads' harm


def test_successor_tasks_and_retrieval(smollm2):
    tasks = heads.successor.select_tasks(smollm2)
    assert {"days", "months", "letters", "number_words"} <= set(tasks.kept)
    assert "is not a single token" in tasks.dropped["numbers"]  # digits are split into single characters
    scores = heads.retrieval.score(smollm2, lengths=(160,), depths=(0.3, 0.7))
    best = heads.top_heads(scores, 1)[0]
    assert best[:2] in KNOWN_INDUCTION and best.score >= 0.75, best
