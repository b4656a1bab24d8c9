"""Each detector ranks its hand-planted head first (tiny TransformerLens models, see planted_heads.py)."""

import torch
from planted_heads import DUP, INDUCTION, NGRAM, PREV, SUCCESSOR, day_ids

from interp import heads


def _first(scores) -> tuple[int, int]:
    top = heads.top_heads(scores, 2)
    assert top[0].score > top[1].score, top  # a strict winner, not a tie
    return top[0].layer, top[0].head


def test_previous_token(planted):
    scores = heads.previous_token.score(planted, batch=4, half=20)
    assert scores.shape == (2, 4)
    assert _first(scores) == PREV
    assert scores[PREV] > 0.99


def test_duplicate_token(planted):
    scores = heads.duplicate_token.score(planted, batch=4, half=20)
    assert _first(scores) == DUP
    assert scores[DUP] > 0.45  # it attends to its own position as much as to the earlier copy


def test_induction_prefix_matching_and_copying(planted):
    scores = heads.induction.score(planted, batch=4, half=20)
    assert _first(scores) == INDUCTION
    assert scores[INDUCTION] > 0.99
    copying = heads.induction.copying_score(planted, batch=4, half=20)
    assert _first(copying) == INDUCTION
    assert copying[INDUCTION] > 5.0  # W_O writes 10 into the copied token's logit
    assert copying.abs().flatten().sort().values[-2] < 0.1


def test_ngram_order2_head_beats_the_induction_head(planted_ngram):
    by = heads.ngram.scores_by_order(planted_ngram, batch=6, length=120)
    assert _first(by["S2"]) == NGRAM
    assert by["S2"][NGRAM] > 0.99 and by["S2"][INDUCTION] < 0.6
    assert int(by["best_k"][NGRAM]) == 2 and int(by["best_k"][INDUCTION]) == 1
    assert by["S1"][INDUCTION] > 0.99  # the induction head is an order-1 head
    assert torch.equal(heads.ngram.score(planted_ngram, batch=6, length=120), by["S2"])


def test_successor(planted):
    tasks = heads.successor.select_tasks(planted)
    assert list(tasks.kept) == ["days"] and tasks.kept["days"] == tuple(day_ids())
    assert "numbers" in tasks.dropped and "unknown" in tasks.dropped["numbers"]
    scores = heads.successor.score(planted)
    assert _first(scores) == SUCCESSOR
    assert scores[SUCCESSOR] == 1.0


def test_retrieval_copy_paste_head(planted):
    scores = heads.retrieval.score(planted, lengths=(48, 96), depths=(0.2, 0.8), seed=3)
    assert _first(scores) == INDUCTION
    assert scores[INDUCTION] == 1.0


def test_detect_ranks_every_planted_head_and_validates(planted):
    report = heads.detect(planted, top_k=1, draws=3, progress=False, repeat_half=20, repeat_batch=4,
                          validation_batch=4, ngram_length=100, ngram_batch=4, retrieval_lengths=(48, 96),
                          retrieval_depths=(0.5,))
    assert report.skipped == {}
    expect = {"previous_token": PREV, "duplicate_token": DUP, "induction": INDUCTION, "retrieval": INDUCTION,
              "successor": SUCCESSOR}
    for kind, head in expect.items():
        assert report.top(kind, 1)[0][:2] == head, kind
    # the copy head carries every repeated-half prediction: ablating it is causal, random single heads are not
    v = report.validation["induction"]
    assert v.causal and v.effect > 1.0, v.verdict
    assert report.validation["successor"].reason is None
