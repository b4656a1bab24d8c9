"""``HeadReport.finding``: each kind's detection result in words, positives and negatives."""

import torch

from interp.heads import HeadReport, HeadsConfig
from interp.heads.findings import finding


def _report(scores, details, skipped=None):
    kinds = tuple(k for k in ("induction", "previous_token", "duplicate_token", "retrieval", "successor", "ngram")
                  if k in scores or k in (skipped or {}))
    return HeadReport(model="m", n_layers=2, n_heads=2, scores=scores, validation={}, details=details,
                      skipped=skipped or {}, config=HeadsConfig(kinds=kinds, top_k=2))


def _ngram_details(best_k, lift2):
    s = torch.tensor([[0.5, 0.2], [0.1, 0.3]])
    return {"S1": s, "S2": s, "S3": s, "lift1": s, "lift2": torch.tensor(lift2), "lift3": torch.zeros(2, 2),
            "best_k": torch.tensor(best_k)}


def test_negatives_are_said_in_words():
    low = torch.tensor([[0.1, 0.3], [0.2, 0.05]])
    r = _report({"successor": low, "ngram": low, "retrieval": low * 0.2, "previous_token": low},
                {"successor": {"kept_tasks": {"days": 7}, "dropped_tasks": {"numbers": "x"}},
                 "ngram": _ngram_details([[1, 1], [1, 1]], [[0.0, 0.0], [0.0, 0.0]]),
                 "retrieval": {"trials": [{}, {}], "reproduced": 2,
                               "retrieval_heads_above_0.1": {"count": 0, "fraction": 0.0}}})
    assert "no head reaches the 0.4 cut-off" in r.finding("successor")
    assert "Tasks kept: days; dropped (not single tokens): numbers" in r.finding("successor")
    assert "no n-gram head beyond induction" in r.finding("ngram")
    assert "No head scores above 0.1: no retrieval head" in r.finding("retrieval")
    assert "Best head L0.1 puts 0.30" in r.finding("previous_token")
    assert "no head puts more than half of it there" in r.finding("previous_token")


def test_positives_are_counted():
    high = torch.tensor([[0.9, 0.45], [0.6, 0.05]])
    r = _report({"successor": high, "ngram": high, "retrieval": high, "induction": high},
                {"successor": {"kept_tasks": {"days": 7}},
                 "ngram": _ngram_details([[2, 1], [1, 1]], [[0.8, 0.0], [0.0, 0.0]]),
                 "retrieval": {"trials": [{}], "reproduced": 1,
                               "retrieval_heads_above_0.1": {"count": 3, "fraction": 0.75}},
                 "induction": {"copying_score": torch.tensor([[-0.5, 0.2], [1.0, 0.0]])}},
                skipped={"duplicate_token": "no patterns here"})
    assert "3 heads score above 0.4" in r.finding("successor")
    assert "1 heads are order-2 and 0 order-3 heads" in r.finding("ngram")
    assert "3 heads (75.0%) score above 0.1" in r.finding("retrieval")
    text = r.finding("induction")
    assert "2 of 4 heads put more than half" in text
    assert "1 of the top 2 prefix-matching heads raise it (L0.0 -0.50, L1.0 +1.00 logits)" in text
    assert "largest copier overall is L1.0 (+1.00)" in text
    assert finding(r, "duplicate_token") == "Skipped: no patterns here"
