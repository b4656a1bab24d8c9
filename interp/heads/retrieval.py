"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality").

Protocol: needle-in-a-haystack trials over a grid of context lengths and needle depths
(:mod:`interp.heads.haystack`), greedy decoding of the answer. At each decoding step t with output ``w_t``, head h
copies and pastes when ``j* = argmax_j A_h[t, j]`` lies in the needle and ``x_{j*} = w_t``. A head's retrieval score
is the number of answer tokens so copied divided by the answer length, averaged over the trials in which the model
reproduced the needle (Wu et al.'s code counts a trial when the answer's ROUGE-1 recall exceeds 0.5; here ROUGE-1
recall is computed over tokens: clipped unigram overlap / answer length). Wu et al. call heads above 0.1 retrieval
heads and find fewer than 5% of heads.

Efficient form: with causal attention, one teacher-forced forward over ``prompt + answer`` gives exactly the
attention rows of every decoding step (and only those rows are computed, beside the fast attention path, where the
model has ``has_query_rows``). Each trial is first run teacher-forced on the *expected* answer; when the
model's greedy prediction at every answer position equals the expected token, greedy decoding would have produced
exactly that answer, so that one forward already holds every decoding step's attention rows. Only the other trials
are decoded greedily (key/value cache) and, if reproduced, run once more teacher-forced on what was generated.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.heads.haystack import Trial, make_trials
from interp.heads.passes import PassLog, attention_pass, check_attention, logits_from_resid, shortcuts

__all__ = ["TrialResult", "score", "run_trials", "rouge1_recall", "copy_paste", "teacher_forced",
           "DEFAULT_LENGTHS", "DEFAULT_DEPTHS"]

DEFAULT_LENGTHS = (256, 512)
DEFAULT_DEPTHS = (0.25, 0.75)
_PATTERN_ELEMENTS = 2**24  # batch * T^2 per eager pattern pass (a 2048-token row is ~4.2M)
_ROW_TOKENS = 8192  # tokens per pass when only the answer rows of the patterns are read


@dataclass(frozen=True)
class TrialResult:
    """What happened in one trial."""

    trial: Trial
    generated: tuple[int, ...]
    """The greedy answer (as many tokens as the expected answer)."""
    rouge: float
    """ROUGE-1 recall of ``generated`` against the answer, over tokens."""
    teacher_forced_correct: float
    """Fraction of answer tokens the model predicts (argmax) given the expected answer so far."""
    copy: Tensor | None
    """``[n_layers, n_heads]``: fraction of answer tokens each head copy-pasted; None when not reproduced."""

    @property
    def reproduced(self) -> bool:
        """Whether the trial counts (ROUGE-1 recall > 0.5, Wu et al. 2024)."""
        return self.rouge > 0.5


def rouge1_recall(generated, answer) -> float:
    """Clipped unigram overlap of ``generated`` with ``answer`` divided by ``len(answer)`` (ROUGE-1 recall)."""
    a, g = Counter(list(answer)), Counter(list(generated))
    if not a:
        raise ValueError("the answer is empty")
    return sum(min(c, g[t]) for t, c in a.items()) / sum(a.values())


def copy_paste(argmax: Tensor, seq: Tensor, needle: tuple[int, int], generated: Tensor) -> Tensor:
    """Fraction of decoding steps at which each head copy-pasted from the needle (Wu et al. 2024).

    ``argmax [layer, head, n]``: each head's most attended key at the rows that produced ``generated [n]``;
    ``seq``: the teacher-forced input. Step t counts when ``needle[0] <= argmax < needle[1]`` and
    ``seq[argmax] == generated[t]``. Returns ``[layer, head]``.
    """
    start, stop = needle
    inside = (argmax >= start) & (argmax < stop)
    same = seq[argmax.clamp_max(seq.shape[0] - 1)] == generated.to(seq.device)
    return (inside & same).float().mean(-1)


def teacher_forced(model, prompts: list[Tensor], answers: list[Tensor], *, log: PassLog | None = None,
                   stage: str = "retrieval") -> list[tuple[Tensor, Tensor]]:
    """For each ``prompt + answer``, the greedy predictions at the answer positions ``[n]`` and every head's most
    attended key at those rows ``[layer, head, n]``, from one forward per batch of equal-length prompts."""
    out: list[tuple[Tensor, Tensor] | None] = [None] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.shape[0], []).append(i)
    rows_only = model.has_attention_heads and model.has_query_rows and shortcuts()
    for P, idx in groups.items():
        width = P + max(answers[i].shape[0] for i in idx) - 1
        # full eager patterns hold batch * head * T^2 numbers; query rows only the SDPA pass's activations
        step = max(1, (_ROW_TOKENS // width) if rows_only else (_PATTERN_ELEMENTS // (width * width)))
        for s in range(0, len(idx), step):
            chunk = idx[s:s + step]
            seqs = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for r, i in enumerate(chunk):
                seq = torch.cat([prompts[i], answers[i][:-1].cpu()])
                seqs[r, :seq.shape[0]] = seq
                mask[r, :seq.shape[0]] = 1
            n = max(answers[i].shape[0] for i in chunk)
            rows = (P - 1 + torch.arange(n)).expand(len(chunk), n).to(model.device)
            seqs, mask = seqs.to(model.device), mask.to(model.device)
            per_layer, resid, _ = attention_pass(model, seqs, lambda layer, p: p.argmax(-1), rows=rows,
                                                 attention_mask=None if bool(mask.all()) else mask, log=log,
                                                 stage=stage)
            preds = logits_from_resid(model, resid, rows).argmax(-1)
            argmax = torch.stack(per_layer, 1)  # [b, layer, head, n]
            for r, i in enumerate(chunk):
                k = answers[i].shape[0]
                out[i] = (preds[r, :k].cpu(), argmax[r, ..., :k].cpu())
    return out  # type: ignore[return-value]


def run_trials(model, trials: list[Trial], *, log: PassLog | None = None, stage: str = "retrieval",
               progress=None) -> list[TrialResult]:
    """Run every trial (module docstring) and return what happened in each."""
    check_attention(model, "retrieval")
    first = teacher_forced(model, [t.prompt for t in trials], [t.answer for t in trials], log=log, stage=stage)
    results: list[TrialResult | None] = [None] * len(trials)
    redo = []
    for i, (t, (preds, argmax)) in enumerate(zip(trials, first)):
        correct = float((preds == t.answer).float().mean())
        if bool((preds == t.answer).all()):
            seq = torch.cat([t.prompt, t.answer[:-1]])
            results[i] = TrialResult(t, tuple(t.answer.tolist()), 1.0, correct,
                                     copy_paste(argmax, seq, t.needle, t.answer))
        else:
            redo.append((i, correct))
    if progress is not None:
        progress(len(trials) - len(redo))
    generated: dict[int, Tensor] = {}
    for i, _ in redo:
        t = trials[i]
        n = t.answer.shape[0]
        out = model.generate(t.prompt[None].to(model.device), max_new_tokens=n, stop_at_eos=False)
        if log is not None:
            log.forward(stage, t.prompt.shape[0] + n, n=n)
        generated[i] = out[0, t.prompt.shape[0]:].cpu()
    keep = [(i, c) for i, c in redo if rouge1_recall(generated[i].tolist(), trials[i].answer.tolist()) > 0.5]
    second = teacher_forced(model, [trials[i].prompt for i, _ in keep], [generated[i] for i, _ in keep], log=log,
                            stage=stage) if keep else []
    kept = {i: argmax for (i, _), (_, argmax) in zip(keep, second)}
    for i, correct in redo:
        t, g = trials[i], generated[i]
        rouge = rouge1_recall(g.tolist(), t.answer.tolist())
        copy = None
        if i in kept:
            copy = copy_paste(kept[i], torch.cat([t.prompt, g[:-1]]), t.needle, g)
        results[i] = TrialResult(t, tuple(g.tolist()), rouge, correct, copy)
    if progress is not None:
        progress(len(redo))
    return results  # type: ignore[return-value]


def scores_from_results(results: list[TrialResult]) -> Tensor:
    """Mean copy-paste fraction over the reproduced trials; raises when none was reproduced."""
    copies = [r.copy for r in results if r.reproduced and r.copy is not None]
    if not copies:
        raise ValueError(f"the model reproduced the needle in none of the {len(results)} trials (ROUGE-1 recall > 0.5 "
                         "needed), so there is no copy-paste event to count")
    return torch.stack(copies).mean(0)


def score(model, lengths=DEFAULT_LENGTHS, depths=DEFAULT_DEPTHS, *, mode: str = "auto", seed: int = 0) -> Tensor:
    """Retrieval score ``[n_layers, n_heads]`` over a needle-in-a-haystack grid (module docstring; Wu et al. 2024).

    ``lengths``: prompt lengths in tokens; ``depths``: needle positions in [0, 1]; ``mode``: haystack kind
    (:func:`interp.heads.haystack.make_trials`). Raises a ValueError when no trial reproduced the needle.
    """
    with torch.no_grad():
        results = run_trials(model, make_trials(model, lengths, depths, mode=mode, seed=seed))
    return scores_from_results(results)
