"""Held-out evaluation of a zoo model: fact recall in unseen templates/fillers, and copying of repeated spans."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import Tensor

from interp.zoo import corpus
from interp.zoo.prompts import FactPrompt, fact_prompts

__all__ = ["recall_accuracy", "copy_accuracy", "evaluate"]

LogitsFn = Callable[[Tensor], Tensor]


def _pad(rows: list[list[int]], pad: int) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


@torch.no_grad()
def recall_accuracy(logits_fn: LogitsFn, prompts: list[FactPrompt], pad_id: int = 0) -> float:
    """Fraction of prompts whose argmax next-token prediction at the last prompt position is the attribute."""
    if not prompts:
        raise ValueError("prompts is empty")
    tokens = _pad([list(p.tokens) for p in prompts], pad_id)
    logits = logits_fn(tokens)
    last = torch.tensor([len(p.tokens) - 1 for p in prompts])
    pred = logits[torch.arange(len(prompts)), last].argmax(-1)
    return (pred == torch.tensor([p.answer_id for p in prompts])).float().mean().item()


@torch.no_grad()
def copy_accuracy(logits_fn: LogitsFn, tok, n: int = 128, span_len: int = 6, seed: int = 10_000) -> float:
    """Accuracy of predicting tokens 2..span_len of the second occurrence of a random span (given token 1),
    on ``n`` fresh sequences ``filler span filler span`` (Olsson et al. 2022's repeated-token setting)."""
    rng = random.Random(seed)
    rows, starts = [], []
    for _ in range(n):
        text, _, second = corpus.copy_example(rng, span_len)
        rows.append([tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]])
        starts.append(1 + second)
    logits = logits_fn(_pad(rows, tok.pad_token_id))
    hits = total = 0
    for i, (row, s) in enumerate(zip(rows, starts)):
        pred = logits[i, s : s + span_len - 1].argmax(-1)
        hits += int((pred == torch.tensor(row[s + 1 : s + span_len])).sum())
        total += span_len - 1
    return hits / total


def evaluate(logits_fn: LogitsFn, tok, seed: int = 777) -> dict:
    """Recall on held-out templates with fresh filler, recall on training templates, and copying accuracy."""
    facts = corpus.fact_table()
    held = fact_prompts(tok, facts, corpus.HELDOUT_TEMPLATES, seed=seed)
    seen = fact_prompts(tok, facts, corpus.TRAIN_TEMPLATES, seed=seed + 1)
    return {
        "recall_heldout_templates": round(recall_accuracy(logits_fn, held, tok.pad_token_id), 4),
        "recall_train_templates": round(recall_accuracy(logits_fn, seen, tok.pad_token_id), 4),
        "copy_accuracy": round(copy_accuracy(logits_fn, tok, seed=seed + 2), 4),
        "n_heldout_prompts": len(held),
    }
