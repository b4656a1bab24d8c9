"""Bad input gets a clear error naming the argument; a kind the model cannot support is skipped with the reason
while the others still run."""

import pytest

from interp import heads
from interp.errors import CapabilityError
from interp.heads.config import HeadsConfig

SMALL = dict(repeat_half=6, repeat_batch=2, validation_batch=2, ngram_length=32, ngram_batch=2, draws=2, top_k=2,
             retrieval_lengths=(40,), retrieval_depths=(0.5,))


def test_unknown_kind_lists_the_valid_ones(tiny):
    with pytest.raises(ValueError, match="unknown head kind\\(s\\) 'inductoin'; valid kinds: induction, "
                                         "previous_token, duplicate_token, retrieval, successor, ngram"):
        heads.detect(tiny("llama"), kinds=["inductoin"], progress=False)
    with pytest.raises(ValueError, match="kinds is empty"):
        heads.detect(tiny("llama"), kinds=[], progress=False)


def test_top_k_larger_than_the_head_count(tiny):
    with pytest.raises(ValueError, match="top_k=9 is larger than the number of heads of this model \\(8 = 2 layers x "
                                         "4 heads\\)"):
        heads.detect(tiny("llama"), top_k=9, progress=False)


def test_bad_options(tiny):
    model = tiny("llama")
    with pytest.raises(TypeError, match="unknown option\\(s\\) \\['repeat_len'\\]"):
        heads.detect(model, repeat_len=3, progress=False)
    for field, value, message in [("draws", 0, "draws must be an int >= 1"),
                                  ("ablation", "noise", "ablation must be one of"),
                                  ("retrieval_lengths", (8,), "retrieval_lengths entries must be an int >= 16"),
                                  ("ngram_stickiness", 2.0, "ngram_stickiness must be a number in \\[0, 1\\]"),
                                  ("retrieval_mode", "essays", "retrieval_mode must be one of")]:
        with pytest.raises(ValueError, match=message):
            HeadsConfig(**{field: value})


def test_tokenizer_without_single_token_successor_task(tiny):
    model = tiny("llama")  # character-level tokenizer: " Monday" is 7 tokens
    with pytest.raises(ValueError, match="this tokenizer leaves no single-token ordinal task for successor heads "
                                         "\\(numbers: ' 1' is not a single token"):
        heads.successor.score(model)
    with pytest.warns(UserWarning, match="kind 'successor' skipped"):
        report = heads.detect(model, kinds="successor,previous_token", progress=False, **SMALL)
    assert "leaves no single-token ordinal task" in report.skipped["successor"]
    assert "previous_token" in report.scores  # the other kind still ran
    with pytest.raises(ValueError, match="no head kind could be scored on this model: successor: this tokenizer"), \
            pytest.warns(UserWarning):
        heads.detect(model, kinds=["successor"], progress=False, **SMALL)


def test_kind_the_model_cannot_support_is_skipped_with_the_reason(tiny):
    model = tiny("mamba2")
    with pytest.raises(CapabilityError, match="OV circuit"):
        heads.successor.score_with_tasks(model, heads.successor.Tasks({"t": (5, 6, 7)}, {}))
    with pytest.raises(CapabilityError, match="W_O"):
        heads.induction.copying_score(model)
    with pytest.warns(UserWarning, match="kind 'successor' skipped"):
        report = heads.detect(model, kinds=["successor", "induction"], progress=False, **SMALL)
    assert "induction" in report.scores and "successor" in report.skipped
    assert "copying score not measured" in report.details["induction"]["copying_note"]


def test_retrieval_too_short_is_reported(tiny):
    with pytest.warns(UserWarning, match="kind 'retrieval' skipped"):
        report = heads.detect(tiny("llama"), kinds="retrieval,previous_token", progress=False,
                              **{**SMALL, "retrieval_lengths": (20,)})
    assert "length 20 is too short for the needle" in report.skipped["retrieval"]
