"""The retrieval detector's shortcut (one teacher-forced pass when greedy decoding would reproduce the expected
answer) against plain greedy decoding plus full attention patterns, and the haystack builder."""

import dataclasses

import pytest
import torch

from interp.heads.haystack import haystack_mode, make_trials
from interp.heads.retrieval import rouge1_recall, run_trials


def _reference(model, trial):
    """Greedy decoding, then the contract's attention patterns over prompt + answer, counted step by step."""
    P, n = trial.prompt.shape[0], trial.answer.shape[0]
    generated = model.generate(trial.prompt[None], max_new_tokens=n, stop_at_eos=False)[0, P:]
    rouge = rouge1_recall(generated.tolist(), trial.answer.tolist())
    if rouge <= 0.5:
        return generated, rouge, None
    seq = torch.cat([trial.prompt, generated[:-1]])
    pats = model.attention_patterns(seq[None])[:, 0]  # [layer, head, q, k]
    copy = torch.zeros(pats.shape[:2])
    for t in range(n):
        for layer in range(pats.shape[0]):
            for h in range(pats.shape[1]):
                j = int(pats[layer, h, P - 1 + t].argmax())
                copy[layer, h] += float(trial.needle[0] <= j < trial.needle[1] and seq[j] == generated[t])
    return generated, rouge, copy / n


def test_run_trials_equals_greedy_decoding(planted):
    trials = make_trials(planted, (40, 72), (0.0, 0.6, 1.0), seed=1)
    wrong = trials[1]  # expect a different token at step 2: the shortcut fails, decoding still copies the needle
    answer = wrong.answer.clone()
    answer[2] = int(trials[0].answer[0])
    trials[1] = dataclasses.replace(wrong, answer=answer)
    with torch.no_grad():
        results = run_trials(planted, trials)
        for trial, got in zip(trials, results):
            generated, rouge, copy = _reference(planted, trial)
            assert list(got.generated) == generated.tolist()
            assert got.rouge == pytest.approx(rouge)
            assert (got.copy is None) == (copy is None)
            if copy is not None:
                torch.testing.assert_close(got.copy, copy)
    assert results[1].rouge == pytest.approx(3 / 4) and results[1].reproduced
    assert results[1].teacher_forced_correct < 1.0


def test_random_model_reproduces_nothing(tiny):
    model = tiny("llama")
    with torch.no_grad():
        results = run_trials(model, make_trials(model, (120,), (0.5,), seed=0))
    assert not results[0].reproduced and results[0].copy is None


def test_haystack_builder(planted, tiny):
    assert haystack_mode(planted) == "tokens"  # word-level toy vocabulary: English filler is unknown
    assert haystack_mode(tiny("llama")) == "text"  # character tokenizer encodes the filler losslessly
    for model in (planted, tiny("llama")):
        for t in make_trials(model, (150, 200), (0.0, 0.5, 1.0), seed=4):
            assert t.prompt.shape == (t.length,)
            start, stop = t.needle
            needle = t.prompt[start:stop].tolist()
            answer = t.answer.tolist()
            assert any(needle[i:i + len(answer)] == answer for i in range(len(needle)))
    tokens_trial = make_trials(planted, (60,), (0.5,), seed=0)[0]
    hay = set(tokens_trial.prompt.tolist()) - set(tokens_trial.prompt[tokens_trial.needle[0]:tokens_trial.needle[1]]
                                                  .tolist())
    assert not hay & set(tokens_trial.answer.tolist())  # needle tokens never occur in the haystack
    with pytest.raises(ValueError, match="too short for the needle"):
        make_trials(tiny("llama"), (16,), (0.5,))  # the character-level needle alone is longer
    with pytest.raises(ValueError, match="depths must be numbers in \\[0, 1\\]"):
        make_trials(planted, (60,), (1.5,))
    with pytest.raises(ValueError, match="haystack mode must be one of"):
        haystack_mode(planted, "essay")
