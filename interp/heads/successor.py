"""Successor heads (Gould et al. 2023, "Successor Heads: Recurring, Interpretable Attention Heads In The Wild"):
heads whose OV circuit maps a token of an ordinal sequence to the next one (Monday -> Tuesday, 3 -> 4, C -> D).

Succession score, from weights only: for each task (below) and each consecutive pair ``(t_i, t_{i+1})``,

    logits = ln_final(ln1(MLP0(W_E[t_i])) W_V[h] W_O[h]) · W_U     restricted to the task's tokens

(``MLP0(W_E)`` is the effective token embedding of Gould et al.: block 0's MLP applied to the normalised token
embeddings; the final norm's constant bias, ``ln_final(0)``, is taken out so only the head's output counts), and the
pair succeeds when ``t_{i+1}`` alone has the largest logit (ties fail). A head's score is the fraction of successful
pairs, averaged over the kept tasks (each task weighs the same). Gould et al. report heads above ~0.4 as successor
heads; that cut-off comes from later work (Tigges et al.), not the paper.

Tasks (Gould et al.): numbers 1-200, number words one-twenty, ordinals first-tenth, days, day abbreviations, months,
month abbreviations, letters A-Z, each item with a leading space. A tokenizer that splits any item of a task into
several tokens excludes that task; which tasks were kept and why the others were dropped is reported.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.errors import CapabilityError
from interp.heads.probes import with_bos

__all__ = ["TASKS", "Tasks", "select_tasks", "check_ov", "score", "score_with_tasks", "prompts"]

_WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
          "eighteen nineteen twenty").split()
_ORDINALS = "first second third fourth fifth sixth seventh eighth ninth tenth".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_MONTHS = "January February March April May June July August September October November December".split()

TASKS: dict[str, tuple[str, ...]] = {
    "numbers": tuple(f" {i}" for i in range(1, 201)),
    "number_words": tuple(f" {w}" for w in _WORDS),
    "ordinals": tuple(f" {w}" for w in _ORDINALS),
    "days": tuple(f" {d}" for d in _DAYS),
    "day_abbreviations": tuple(f" {d[:3]}" for d in _DAYS),
    "months": tuple(f" {m}" for m in _MONTHS),
    "month_abbreviations": tuple(f" {m[:3]}" for m in _MONTHS),
    "letters": tuple(f" {c}" for c in string.ascii_uppercase),
}
"""The ordinal tasks of Gould et al. 2023."""


@dataclass(frozen=True)
class Tasks:
    """The tasks a tokenizer keeps as single tokens."""

    kept: dict[str, tuple[int, ...]]
    """Task name -> token ids of its items, in order."""
    dropped: dict[str, str]
    """Task name -> why it was dropped (the first item that is not one token)."""


def select_tasks(model, tasks: dict[str, tuple[str, ...]] | None = None) -> Tasks:
    """Split ``tasks`` (default :data:`TASKS`) into those whose every item is one token of the model's tokenizer and
    those dropped (with the reason). Raises a ValueError when nothing is kept (the message lists every reason)."""
    tasks = TASKS if tasks is None else tasks
    if model.tokenizer is None:
        raise ValueError("successor heads need a tokenizer (to find the single-token ordinal tasks); this model has "
                         "none")
    kept, dropped = {}, {}
    unk = getattr(model.tokenizer, "unk_token_id", None)
    for name, items in tasks.items():
        if len(items) < 2:
            raise ValueError(f"task {name!r} has {len(items)} items; a sequence needs at least 2")
        ids, reason = [], None
        for item in items:
            try:
                ids.append(model.to_single_token(item))
            except ValueError as err:
                reason = str(err)
                break
            if unk is not None and ids[-1] == unk:
                reason = f"{item!r} is the unknown token"
                break
        if reason is None and len(set(ids)) < len(ids):
            reason = "two items map to the same token"
        if reason is None:
            kept[name] = tuple(ids)
        else:
            dropped[name] = reason
    if not kept:
        lines = "; ".join(f"{k}: {v}" for k, v in dropped.items())
        raise ValueError(f"this tokenizer leaves no single-token ordinal task for successor heads ({lines})")
    return Tasks(kept, dropped)


@torch.no_grad()
def check_ov(model) -> None:
    """Raise a ``CapabilityError`` when the model has no per-head OV circuit (``W_V``, ``W_O``) or no MLP in block 0:
    the succession score does not apply (Mamba: heads are read from implicit attention, which has no OV matrix)."""
    if not (model.has_attention_heads and model.has_mlp):
        raise CapabilityError(f"successor heads need each head's OV circuit (W_V, W_O) and block 0's MLP; this "
                              f"{model.arch} model has_attention_heads={model.has_attention_heads}, "
                              f"has_mlp={model.has_mlp}")


def score_with_tasks(model, tasks: Tasks) -> tuple[Tensor, dict[str, Tensor]]:
    """``(score [n_layers, n_heads], per_task {name: [n_layers, n_heads]})`` for the kept ``tasks`` (module
    docstring; Gould et al. 2023). Needs attention heads (``W_V``, ``W_O``) and an MLP in block 0."""
    check_ov(model)
    ids = torch.tensor([i for v in tasks.kept.values() for i in v], device=model.device)
    W_E, W_U = model.W_E, model.W_U
    mlp0 = model.apply_mlp(0, model.apply_ln2(0, W_E[ids]))  # effective embeddings [n, d]
    zero = model.apply_ln_final(torch.zeros_like(mlp0[:1]))
    U = W_U[:, ids].float()
    per_task = {name: [] for name in tasks.kept}
    W_V, W_O = model.W_V, model.W_O
    for layer in range(model.n_layers):
        x = model.apply_ln1(layer, mlp0)
        out = torch.einsum("nd,hdk,hkm->hnm", x.float(), W_V[layer].float(), W_O[layer].float())
        logits = (model.apply_ln_final(out.to(mlp0.dtype)) - zero).float() @ U  # [head, n, n]
        start = 0
        for name, items in tasks.kept.items():
            n = len(items)
            block = logits[:, start:start + n - 1, start:start + n]  # sources t_1..t_{n-1}, candidates = the task
            top = block.max(-1)
            unique = (block == top.values[..., None]).sum(-1) == 1
            right = (top.indices == torch.arange(1, n, device=block.device)) & unique
            per_task[name].append(right.float().mean(-1))
            start += n
    stacked = {name: torch.stack(v).cpu() for name, v in per_task.items()}
    return torch.stack(list(stacked.values())).mean(0), stacked


def score(model, tasks: dict[str, tuple[str, ...]] | None = None, *, seed: int = 0) -> Tensor:
    """Succession score ``[n_layers, n_heads]`` over the tasks the tokenizer keeps (module docstring; Gould et al.
    2023). ``tasks``: name -> items (default :data:`TASKS`). ``seed`` is accepted for a uniform signature; the score
    is deterministic."""
    check_ov(model)  # the more basic reason first: no OV circuit at all
    return score_with_tasks(model, select_tasks(model, tasks))[0]


def prompts(model, tasks: Tasks, window: int = 4, separator: str | None = ",", *,
            per_task: int = 0) -> tuple[Tensor, Tensor]:
    """Behavioural prompts for validation: every run of ``window`` consecutive items of a kept task, each followed by
    ``separator`` when it is one token of the tokenizer (``" Monday, Tuesday, Wednesday, Thursday,"``), BOS first
    when the tokenizer has one, and the item that follows: ``(tokens [n, T], targets [n])``. ``per_task > 0``: at
    most that many runs per task, evenly spaced over its items (0: every run). Tasks shorter than ``window + 1``
    contribute nothing; raises if no prompt remains."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1; got {window!r}")
    if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 0:
        raise ValueError(f"per_task must be an int >= 0 (0 = every run); got {per_task!r}")
    sep: list[int] = []
    if separator:
        try:
            sep = [model.to_single_token(separator)]
        except ValueError:
            sep = []
        if sep and sep[0] == getattr(model.tokenizer, "unk_token_id", None):
            sep = []
    rows, targets = [], []
    for items in tasks.kept.values():
        runs = len(items) - window
        starts = range(runs) if not per_task or runs <= per_task else \
            sorted({round(j * (runs - 1) / (per_task - 1)) if per_task > 1 else 0 for j in range(per_task)})
        for i in starts:
            rows.append([t for item in items[i:i + window] for t in (item, *sep)])
            targets.append(items[i + window])
    if not rows:
        raise ValueError(f"no kept task has more than window={window} items; pass a smaller window")
    tokens = with_bos(model, torch.tensor(rows, dtype=torch.long))
    return tokens.to(model.device), torch.tensor(targets, dtype=torch.long, device=model.device)
