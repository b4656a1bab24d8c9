"""Causal validation: does ablating a kind's top-k heads hurt that kind's own task more than ablating k random heads?

The comparison Wu et al. 2024 make for retrieval heads (masking the top heads breaks needle retrieval, masking as
many random heads does not), applied to every kind with its own task: repeated-half loss for induction (Olsson et al.
2022), needle reproduction for retrieval, next-item accuracy for successor heads (Gould et al. 2023), next-token loss
where the kind's attention targets matter for the others.

For each kind, :func:`validate_many` evaluates the task metric with no ablation, with the top-k heads ablated, and with
``draws`` sets of k heads drawn at random from the other heads (outside the top-k of every kind validated on the same
task, which share these draws, when at least 2k such heads exist; else per kind, and from all heads when fewer than 2k
heads lie outside its own top-k), all in batched forward passes
(:func:`run_conditions`: each condition is a slice of a batch with its own head mask, running only the blocks from
its first ablated layer on, from the clean run's residual stream there).
The *effect* of an ablation is the change of the metric in the harmful direction (loss up, accuracy down).

Verdict: the top-k heads are called **causal** for the task when their effect is at least ``min_effect``, larger
than every random draw's, and larger than the random mean plus two standard deviations; otherwise the report says,
in words, that this test finds no evidence that the model relies on them for the task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.heads.ablation import ablation_hooks
from interp.heads.passes import PassLog, shortcuts, unembed
from interp.heads.probes import generator

__all__ = ["Validation", "run_conditions", "validate_many", "random_head_sets", "unavailable"]

_MAX_TOKENS = 8192  # tokens per batched forward of ablation conditions
_MAX_LOGITS = 2**25  # logits materialised at once
_PASS_OVERHEAD = 64  # per-block cost of a pass, in tokens (SmolLM2 on 2 CPU cores: ~2 ms per block, ~0.04 per token)


@dataclass(frozen=True)
class Validation:
    """Top-k versus random-k ablation on one kind's task metric."""

    kind: str
    metric: str
    """What is measured, in words."""
    harm: str
    """``"increase"`` (a loss) or ``"decrease"`` (an accuracy): the direction in which ablation hurts."""
    how: str
    """Ablation: ``"zero"`` or ``"mean"``."""
    heads: tuple[tuple[int, int], ...]
    """The ablated top-k heads ``(layer, head)``."""
    clean: float
    """Metric with nothing ablated."""
    ablated: float
    """Metric with the top-k heads ablated."""
    random: tuple[float, ...]
    """Metric with each random draw ablated."""
    random_heads: tuple[tuple[tuple[int, int], ...], ...]
    """The heads of each random draw."""
    min_effect: float
    """The smallest effect called causal."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Secondary metrics (same conditions), e.g. the loss when the headline metric is an accuracy."""
    reason: str | None = None
    """Set when validation could not run (the other fields are then empty)."""

    def _effect(self, value: float) -> float:
        return value - self.clean if self.harm == "increase" else self.clean - value

    @property
    def effect(self) -> float:
        """Harm done by ablating the top-k heads (> 0: the metric got worse)."""
        return self._effect(self.ablated)

    @property
    def random_effects(self) -> list[float]:
        return [self._effect(v) for v in self.random]

    @property
    def random_mean(self) -> float:
        r = self.random_effects
        return sum(r) / len(r) if r else float("nan")

    @property
    def random_std(self) -> float:
        r = self.random_effects
        if len(r) < 2:
            return 0.0
        m = self.random_mean
        return math.sqrt(sum((x - m) ** 2 for x in r) / (len(r) - 1))

    @property
    def ratio(self) -> float | None:
        """Top-k effect / mean random effect (None when random heads did no harm on average: a mean effect below a
        tenth of ``min_effect``)."""
        m = self.random_mean
        return self.effect / m if self.reason is None and m > 0.1 * self.min_effect else None

    @property
    def causal(self) -> bool:
        if self.reason is not None:
            return False
        r = self.random_effects
        return (self.effect >= self.min_effect and self.effect > max(r, default=-math.inf)
                and self.effect > self.random_mean + 2 * self.random_std)

    @property
    def verdict(self) -> str:
        """The finding in words."""
        if self.reason is not None:
            return f"not validated: {self.reason}"
        k, n = len(self.heads), len(self.random)
        change = "raises" if self.harm == "increase" else "lowers"
        spread = f"{self.random_mean:.3g} ± {self.random_std:.3g} over {n} random {k}-head draws"
        if self.causal:
            times = f", {self.ratio:.1f}x the random mean" if self.ratio is not None else \
                ", while random heads do no harm on average"
            return (f"causal: ablating the top-{k} heads {change} the {self.metric} by {self.effect:.3g} "
                    f"({self.clean:.3g} -> {self.ablated:.3g}){times} ({spread}).")
        return (f"not causal: ablating the top-{k} heads changes the {self.metric} by {self.effect:+.3g} in the "
                f"harmful direction ({self.clean:.3g} -> {self.ablated:.3g}), not clearly beyond random heads "
                f"({spread}, max {max(self.random_effects, default=float('nan')):.3g}); this test finds no evidence "
                "that the model relies on these heads for this task.")

    def to_dict(self) -> dict[str, Any]:
        if self.reason is not None:
            return {"metric": self.metric, "reason": self.reason, "causal": False, "verdict": self.verdict}
        return {
            "metric": self.metric, "harm": self.harm, "how": self.how, "top_heads": [list(h) for h in self.heads],
            "clean": self.clean, "top_ablated": self.ablated, "random_ablated": list(self.random),
            "random_heads": [[list(h) for h in draw] for draw in self.random_heads],
            "effect_top": self.effect, "effect_random_mean": self.random_mean, "effect_random_std": self.random_std,
            "effect_ratio": self.ratio, "min_effect": self.min_effect, "causal": self.causal, "verdict": self.verdict,
            "extra": self.extra,
        }


def unavailable(kind: str, metric: str, reason: str) -> Validation:
    """A validation that could not run, with the reason."""
    return Validation(kind, metric, "increase", "", (), math.nan, math.nan, (), (), math.inf, reason=reason)


def draws_from_others(n_others: int, k: int) -> bool:
    """Whether random k-head sets come from the heads outside the top ones (else from all heads): only when at least
    ``2 k`` others exist, so that the draws can differ."""
    return n_others >= 2 * k


def random_head_sets(n_layers: int, n_heads: int, top: Sequence[tuple[int, int]], draws: int,
                     seed: int, k: int | None = None) -> list[tuple[tuple[int, int], ...]]:
    """``draws`` sets of ``k`` (default ``len(top)``) distinct heads, from the heads outside ``top``, drawn with
    ``seed``; from all heads when fewer than ``2 k`` others exist (so that the draws can differ)."""
    k = len(top) if k is None else k
    everyone = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    others = [x for x in everyone if x not in set(top)]
    pool = others if draws_from_others(len(others), k) else everyone
    g = generator(seed)
    return [tuple(sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:k].tolist())) for _ in range(draws)]


def _masks(model, head_sets: Sequence[Sequence[tuple[int, int]]]) -> Tensor:
    m = torch.zeros(len(head_sets), model.n_layers, model.n_heads, dtype=torch.bool)
    for c, heads in enumerate(head_sets):
        for layer, h in heads:
            m[c, layer, h] = True
    return m


def _merge(groups: list[tuple[int, list[int]]], tokens: int, n_layers: int) -> list[tuple[int, list[int]]]:
    """Passes for condition groups ``(start layer, conditions)`` sorted by start: consecutive groups share one pass
    from the earliest start when that is cheaper, a pass through ``n`` blocks over ``x`` tokens costing ``n (x +
    _PASS_OVERHEAD)`` (a small batch does not use the CPU's matrix units fully; measured on SmolLM2, 2 cores)."""
    best: list[tuple[float, list[tuple[int, list[int]]]]] = [(0.0, [])]
    for j in range(1, len(groups) + 1):
        options = []
        for i in range(j):
            conds = [c for _, cs in groups[i:j] for c in cs]
            if i < j - 1 and len(conds) * tokens > _MAX_TOKENS:
                continue
            cost = (n_layers - groups[i][0]) * (len(conds) * tokens + _PASS_OVERHEAD)
            options.append((best[i][0] + cost, best[i][1] + [(groups[i][0], conds)]))
        best.append(min(options, key=lambda o: o[0]))
    return best[-1][1]


def _start_layers(head_sets) -> list[int | None]:
    """The first block each condition changes (None: the clean run)."""
    return [min(layer for layer, _ in heads) if heads else None for heads in head_sets]


@torch.no_grad()
def run_conditions(model, tokens: Tensor, rows: Tensor, targets: Tensor, head_sets, *, how: str,
                   valid: Tensor | None = None, log: PassLog | None = None,
                   stage: str = "validation") -> tuple[Tensor, Tensor, int]:
    """Next-token loss and accuracy at ``rows`` under each head set's ablation.

    ``tokens [b, T]`` (one condition's batch), ``rows``/``targets [b, R]`` (positions and the tokens that should
    follow them), ``valid [b, R]`` (bool, default all), ``head_sets``: one list of ``(layer, head)`` per condition
    (empty = clean). Returns ``(loss_sum [n_cond], correct_sum [n_cond], count)``: sums over the valid rows, so
    several calls can be pooled.

    The blocks before a condition's first ablated layer compute exactly the clean run, so the clean run is made
    once, keeping the residual stream where some condition starts, and each condition runs only its own blocks
    (conditions starting at the same or nearby blocks share a batch when that is cheaper, see :func:`_merge`).
    Inside :func:`~interp.heads.passes.plain_passes` every condition runs all blocks from the tokens.
    """
    valid = torch.ones_like(targets, dtype=torch.bool) if valid is None else valid
    loss_sum = torch.zeros(len(head_sets), dtype=torch.float64)
    correct_sum = torch.zeros(len(head_sets), dtype=torch.float64)
    starts = _start_layers(head_sets) if shortcuts() else [0] * len(head_sets)
    b, T = tokens.shape
    resid_at: dict[int, Tensor] = {}
    if any(s != 0 for s in starts):  # the clean run, keeping the residual stream where conditions start
        sites = {model.components(s)["resid_pre"]: s for s in set(starts) if s}
        resid, cache = model.run_with_cache(tokens, names_filter=list(sites), stop_at_layer=model.n_layers)
        resid_at = {s: cache[name] for name, s in sites.items()}
        if log is not None:
            log.forward(stage, tokens)
        clean = [c for c, s in enumerate(starts) if s is None]
        _score(model, resid, clean, rows, targets, valid, loss_sum, correct_sum)
    groups: dict[int, list[int]] = {}
    for c, s in enumerate(starts):
        if s is not None:
            groups.setdefault(s, []).append(c)
    per_chunk = max(1, _MAX_TOKENS // (b * T))
    for start, conds in _merge(sorted(groups.items()), b * T, model.n_layers):
        for c0 in range(0, len(conds), per_chunk):
            chunk = conds[c0:c0 + per_chunk]
            m = _masks(model, [head_sets[c] for c in chunk])
            n = len(chunk)
            with model.hooks(ablation_hooks(model, m, how)):
                if start == 0:
                    resid = model(tokens.repeat(n, 1), stop_at_layer=model.n_layers)
                else:
                    resid = model(resid_at[start].repeat(n, 1, 1), start_at_layer=start,
                                  stop_at_layer=model.n_layers)
            if log is not None:
                log.forward(stage, n * b * T, blocks=(model.n_layers - start) / model.n_layers)
            _score(model, resid, chunk, rows, targets, valid, loss_sum, correct_sum)
    return loss_sum, correct_sum, int(valid.sum())


def _score(model, resid: Tensor, conds: list[int], rows: Tensor, targets: Tensor, valid: Tensor,
           loss_sum: Tensor, correct_sum: Tensor) -> None:
    """Add the loss and hits at the valid ``rows`` of ``resid`` (``len(conds)`` consecutive slices of ``b`` rows, one
    per condition) to the sums of ``conds``; logits are computed at the valid rows only."""
    n, (b, R) = len(conds), rows.shape
    if n == 0:
        return
    dev = resid.device
    rows, targets, valid = rows.to(dev), targets.to(dev), valid.to(dev)
    picked = resid.reshape(n, b, *resid.shape[1:]).gather(2, rows[None, :, :, None].expand(n, -1, -1, resid.shape[-1]))
    ok = valid.reshape(-1)
    x = picked.reshape(n, b * R, -1)[:, ok].reshape(-1, resid.shape[-1])  # [n * valid, d_model]
    tgt = targets.reshape(-1)[ok].repeat(n)
    cond = torch.tensor(conds, device=dev).repeat_interleave(int(ok.sum()))
    step = max(1, _MAX_LOGITS // model.d_vocab)
    for s in range(0, x.shape[0], step):
        logits = unembed(model, x[s:s + step])
        t = tgt[s:s + step]
        ce = torch.nn.functional.cross_entropy(logits, t, reduction="none")
        hit = logits.argmax(-1) == t
        loss_sum.index_add_(0, cond[s:s + step].cpu(), ce.double().cpu())
        correct_sum.index_add_(0, cond[s:s + step].cpu(), hit.double().cpu())


def validate_many(model, tops: dict[str, Sequence[tuple[int, int]]], batches, *, metrics: dict[str, str],
                  headline: str, how: str, draws: int, seed: int, log: PassLog | None = None,
                  min_effect: float | None = None) -> dict[str, Validation]:
    """Validate several kinds that share a task: one clean condition, ``draws`` random k-head sets (drawn from the
    heads outside every kind's top-k, and shared by the kinds: one baseline for one task; when fewer than 2k heads
    lie outside them, as in tiny models, each kind gets its own draws instead), and each kind's top-k, all evaluated
    on ``batches`` (a list of ``(tokens, rows, targets, valid)``; see :func:`run_conditions`) and compared (module
    docstring).

    ``headline``: ``"loss"`` (mean next-token loss, harm = increase) or ``"accuracy"`` (harm = decrease); the other
    is kept in ``extra``. ``min_effect`` defaults to 0.01 nats for a loss and one target for an accuracy.
    """
    if headline not in ("loss", "accuracy"):
        raise ValueError(f"headline must be 'loss' or 'accuracy'; got {headline!r}")
    tops = {kind: tuple(tuple(h) for h in top) for kind, top in tops.items()}
    sizes = {len(top) for top in tops.values()}
    if len(sizes) != 1:
        raise ValueError(f"kinds validated together need top sets of one size; got {sorted(sizes)}")
    k = sizes.pop()
    union = tuple(dict.fromkeys(h for top in tops.values() for h in top))
    sets: list[tuple[tuple[int, int], ...]] = [()]
    where = {}
    if model.n_layers * model.n_heads - len(union) >= 2 * k:  # one shared baseline, outside every kind's top-k
        shared = random_head_sets(model.n_layers, model.n_heads, union, draws, seed, k=k)
        sets += shared
        for kind in tops:
            where[kind] = (list(range(1, 1 + draws)), shared)
    else:  # too few heads outside the union for varied draws (tiny models): a baseline per kind
        for i, (kind, top) in enumerate(tops.items()):
            own = random_head_sets(model.n_layers, model.n_heads, top, draws, seed + i)
            where[kind] = (list(range(len(sets), len(sets) + draws)), own)
            sets += own
    for kind, top in tops.items():
        where[kind] = (len(sets), top, *where[kind])
        sets.append(top)
    loss = torch.zeros(len(sets), dtype=torch.float64)
    correct = torch.zeros(len(sets), dtype=torch.float64)
    count = 0
    stage = "+".join(tops)
    for tokens, rows, targets, valid in batches:
        ls, cs, n = run_conditions(model, tokens, rows, targets, sets, how=how, valid=valid, log=log, stage=stage)
        loss += ls
        correct += cs
        count += n
    if count == 0:
        return {k: unavailable(k, metrics[k], "the validation data has no target position") for k in tops}
    loss_l, acc_l = (loss / count).tolist(), (correct / count).tolist()
    main, other, other_name = (loss_l, acc_l, "accuracy") if headline == "loss" else (acc_l, loss_l, "loss")
    floor = min_effect if min_effect is not None else (0.01 if headline == "loss" else 1.0 / count)
    out = {}
    for kind, (i, top, idx, randoms) in where.items():
        out[kind] = Validation(
            kind=kind, metric=metrics[kind], harm="increase" if headline == "loss" else "decrease", how=how,
            heads=top, clean=main[0], ablated=main[i], random=tuple(main[j] for j in idx),
            random_heads=tuple(randoms), min_effect=floor,
            extra={other_name: {"clean": other[0], "top_ablated": other[i], "random_ablated": [other[j] for j in idx]},
                   "targets": count, "uniform_loss": math.log(model.d_vocab)},
        )
    return out
