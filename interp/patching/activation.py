"""Activation patching (denoising): copy one clean activation into the corrupted run and score the output.

Vig et al. 2020, Geiger et al. 2021; as in TransformerLens's ``patching.get_act_patch_*`` (whose results these
equal on the same weights): every cell holds the metric of the corrupted run with that one activation slice taken
from the clean run, averaged over the prompts. Every function here is the one engine
(:func:`interp.patching.engine.run_variants`, see there for the speed tricks) with one site and one setter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.models.loading import as_hooked
from interp.models.memory import BudgetLike
from interp.patching.engine import Patch, Variant, run_variants
from interp.patching.inputs import pair_tokens
from interp.patching.metrics import bind_metric, evaluate_metric
from interp.patching.sites import SiteKind, check_positions, site_kind

__all__ = ["patch_activations", "patch_residual", "patch_resid_mid", "patch_attn_out", "patch_mlp_out",
           "patch_mixer_out", "patch_mixer", "patch_ssm_state", "patch_heads", "patch_head_q", "patch_head_k",
           "patch_head_v", "patch_head_pattern", "PatchRun"]

Metric = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PatchRun:
    """Everything one patching sweep produced (what :func:`interp.patching.sweep` reports)."""

    values: Tensor
    """Metric per cell, mean over prompts; axes ``axes``."""
    axes: tuple[str, ...]
    layers: list[int]
    positions: list[int]
    heads: list[int]
    clean_metric: float
    corrupt_metric: float
    clean_tokens: Tensor
    corrupt_tokens: Tensor


def _cells(kind: SiteKind, layers: list[int], positions: list[int], heads: list[int]):
    """``(index, start_pos, cell)`` per cell, in the result's order."""
    for li, layer in enumerate(layers):
        if kind.axes == ("layer", "pos"):
            for pi, p in enumerate(positions):
                yield layer, (p,), p, (li, pi)
        elif kind.axes == ("layer", "pos", "head"):
            for pi, p in enumerate(positions):
                for hi, h in enumerate(heads):
                    yield layer, (p, h), p, (li, pi, hi)
        elif kind.axes == ("layer", "head"):
            for hi, h in enumerate(heads):
                yield layer, (h,), 0, (li, hi)
        else:  # ("layer", "head", "dest")
            for hi, h in enumerate(heads):
                for pi, p in enumerate(positions):
                    yield layer, (h, p), p, (li, hi, pi)


def run_patching(model, clean_tokens, corrupt_tokens, metric: Metric, site: str, *, positions=None, layers=None,
                 batch_size: int | None = None, memory_budget: BudgetLike = None, progress: bool = True) -> PatchRun:
    """The sweep behind every ``patch_*`` function, keeping the baselines and axes (see :func:`patch_activations`)."""
    model = as_hooked(model, "run_patching")
    kind = site_kind(model, site)
    clean, corrupt = pair_tokens(model, clean_tokens, corrupt_tokens)
    n, T = clean.shape
    layers = model.check_layers(layers)
    positions = check_positions(positions, T)
    metric = bind_metric(metric, model)
    names = {layer: model.components(layer)[kind.role] for layer in layers}
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean, names_filter=list(names.values()))
    clean_metric = evaluate_metric(metric, clean_logits, n)
    sample = cache[names[layers[0]]]
    heads = list(range(sample.shape[1] if kind.pattern else sample.shape[2])) if "head" in kind.axes else []
    variants, cells = [], []
    for layer, index, start, cell in _cells(kind, layers, positions, heads):
        variants.append(Variant((Patch(layer, names[layer], kind.setter, index),), start))
        cells.append(cell)
    values, corrupt_metric = run_variants(
        model, corrupt, variants, metric, {name: cache[name] for name in names.values()}, batch_size=batch_size,
        memory_budget=memory_budget, progress=progress, desc=f"patching {site}")
    sizes = {"layer": len(layers), "pos": len(positions), "dest": len(positions), "head": len(heads)}
    out = torch.empty([sizes[a] for a in kind.axes])
    for cell, value in zip(cells, values.tolist()):
        out[cell] = value
    return PatchRun(out, kind.axes, layers, positions, heads, float(clean_metric.mean()),
                    float(corrupt_metric.mean()), clean, corrupt)


def patch_activations(model, clean_tokens, corrupt_tokens, metric: Metric, site: str, *,
                      positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                      batch_size: int | None = None, memory_budget: BudgetLike = None,
                      progress: bool = True) -> Tensor:
    """Patch ``site`` (a keyword of :data:`interp.patching.SITES`: ``"resid"``, ``"attn_out"``, ``"heads"``,
    ``"ssm_state"``, ...) cell by cell from the clean run into the corrupted run; returns the metric per cell.

    ``clean_tokens`` / ``corrupt_tokens``: ``[n, pos]`` ids or text, the same shape (prompt i of one is paired with
    prompt i of the other). ``metric(logits [n, pos, d_vocab]) -> Tensor[n]``; each cell is its mean over the
    prompts (:func:`~interp.patching.logit_diff`, :func:`~interp.patching.target_prob`). ``positions`` / ``layers``
    restrict the sweep (default all). ``batch_size``: at most this many patched variants per forward;
    ``memory_budget``: what the caches and batched forwards may use (bytes, ``"2GiB"``, ``"1.5G"``, ``"80%"``,
    ``"off"``; default 2 GiB of working memory).
    """
    model = as_hooked(model, "patch_activations")
    return run_patching(model, clean_tokens, corrupt_tokens, metric, site, positions=positions, layers=layers,
                        batch_size=batch_size, memory_budget=memory_budget, progress=progress).values


def patch_residual(model, clean_tokens, corrupt_tokens, metric: Metric, *, positions: Sequence[int] | None = None,
                   layers: Sequence[int] | None = None, batch_size: int | None = None,
                   memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch the residual stream before each block (``hook_resid_pre``) at each position: ``Tensor[layer, pos]``
    (TransformerLens ``get_act_patch_resid_pre``). Arguments as :func:`patch_activations`."""
    model = as_hooked(model, "patch_residual")
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, "resid", positions=positions,
                             layers=layers, batch_size=batch_size, memory_budget=memory_budget, progress=progress)


def patch_resid_mid(model, clean_tokens, corrupt_tokens, metric: Metric, *, positions: Sequence[int] | None = None,
                    layers: Sequence[int] | None = None, batch_size: int | None = None,
                    memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch the residual stream between attention and MLP (``hook_resid_mid``): ``Tensor[layer, pos]``
    (transformers; TransformerLens ``get_act_patch_resid_mid``)."""
    model = as_hooked(model, "patch_resid_mid")
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, "resid_mid", positions=positions,
                             layers=layers, batch_size=batch_size, memory_budget=memory_budget, progress=progress)


def patch_attn_out(model, clean_tokens, corrupt_tokens, metric: Metric, *, positions: Sequence[int] | None = None,
                   layers: Sequence[int] | None = None, batch_size: int | None = None,
                   memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch each attention layer's output (``hook_attn_out``) at each position: ``Tensor[layer, pos]``
    (TransformerLens ``get_act_patch_attn_out``)."""
    model = as_hooked(model, "patch_attn_out")
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, "attn_out", positions=positions,
                             layers=layers, batch_size=batch_size, memory_budget=memory_budget, progress=progress)


def patch_mlp_out(model, clean_tokens, corrupt_tokens, metric: Metric, *, positions: Sequence[int] | None = None,
                  layers: Sequence[int] | None = None, batch_size: int | None = None,
                  memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch each MLP's output (``hook_mlp_out``) at each position: ``Tensor[layer, pos]``
    (TransformerLens ``get_act_patch_mlp_out``)."""
    model = as_hooked(model, "patch_mlp_out")
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, "mlp_out", positions=positions,
                             layers=layers, batch_size=batch_size, memory_budget=memory_budget, progress=progress)


def patch_mixer_out(model, clean_tokens, corrupt_tokens, metric: Metric, *, positions: Sequence[int] | None = None,
                    layers: Sequence[int] | None = None, batch_size: int | None = None,
                    memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch each Mamba mixer's output (``hook_mixer_out``) at each position: ``Tensor[layer, pos]``."""
    model = as_hooked(model, "patch_mixer_out")
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, "mixer_out", positions=positions,
                             layers=layers, batch_size=batch_size, memory_budget=memory_budget, progress=progress)


def patch_mixer(model, clean_tokens, corrupt_tokens, metric: Metric, component: str, *,
                positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                batch_size: int | None = None, memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch one Mamba mixer component at each (layer, position): ``Tensor[layer, pos]``. ``component``: a role of
    ``model.components(layer)`` -- ``"x"``, ``"gate"``, ``"conv"``, ``"dt"``, ``"B"``, ``"C"``, ``"ssm_state"``,
    ``"ssm"`` (the scan output y), ``"out"`` (Sharma et al. 2024 trace ``conv``, ``ssm``, ``gate``, ``out``).
    A patched ``ssm_state`` at position p is carried forward by the scan (see :mod:`interp.mamba.model`)."""
    model = as_hooked(model, "patch_mixer")
    if component not in ("x", "gate", "conv", "dt", "B", "C", "ssm_state", "ssm", "out"):
        raise KeyError(f"component={component!r}: expected one of x, gate, conv, dt, B, C, ssm_state, ssm, out")
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, component, positions=positions,
                             layers=layers, batch_size=batch_size, memory_budget=memory_budget, progress=progress)


def patch_ssm_state(model, clean_tokens, corrupt_tokens, metric: Metric, *, positions: Sequence[int] | None = None,
                    layers: Sequence[int] | None = None, batch_size: int | None = None,
                    memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch the Mamba SSM state ``h_p`` (``hook_ssm_state``) of each layer at each position: ``Tensor[layer, pos]``;
    the scan continues from the patched state (Gu & Dao 2023's recurrence)."""
    model = as_hooked(model, "patch_ssm_state")
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, "ssm_state", positions=positions,
                             layers=layers, batch_size=batch_size, memory_budget=memory_budget, progress=progress)


def _heads(model, clean_tokens, corrupt_tokens, metric, site: str, by_pos: bool, positions, layers, batch_size,
           memory_budget, progress) -> Tensor:
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, f"{site}_by_pos" if by_pos else site,
                             positions=positions, layers=layers, batch_size=batch_size, memory_budget=memory_budget,
                             progress=progress)


def patch_heads(model, clean_tokens, corrupt_tokens, metric: Metric, *, by_pos: bool = False,
                positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                batch_size: int | None = None, memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch each attention head's output (``hook_z``): ``Tensor[layer, head]`` over all positions, or with
    ``by_pos`` ``Tensor[layer, pos, head]`` (TransformerLens ``get_act_patch_attn_head_out_all_pos`` /
    ``_by_pos``)."""
    model = as_hooked(model, "patch_heads")
    return _heads(model, clean_tokens, corrupt_tokens, metric, "heads", by_pos, positions, layers, batch_size,
                  memory_budget, progress)


def patch_head_q(model, clean_tokens, corrupt_tokens, metric: Metric, *, by_pos: bool = False,
                 positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                 batch_size: int | None = None, memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch each head's queries (``hook_q``): ``Tensor[layer, head]``, or ``[layer, pos, head]`` with ``by_pos``."""
    model = as_hooked(model, "patch_head_q")
    return _heads(model, clean_tokens, corrupt_tokens, metric, "q", by_pos, positions, layers, batch_size,
                  memory_budget, progress)


def patch_head_k(model, clean_tokens, corrupt_tokens, metric: Metric, *, by_pos: bool = False,
                 positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                 batch_size: int | None = None, memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch each key head's keys (``hook_k``; kv heads under grouped-query attention): ``Tensor[layer, kv_head]``,
    or ``[layer, pos, kv_head]`` with ``by_pos``."""
    model = as_hooked(model, "patch_head_k")
    return _heads(model, clean_tokens, corrupt_tokens, metric, "k", by_pos, positions, layers, batch_size,
                  memory_budget, progress)


def patch_head_v(model, clean_tokens, corrupt_tokens, metric: Metric, *, by_pos: bool = False,
                 positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                 batch_size: int | None = None, memory_budget: BudgetLike = None, progress: bool = True) -> Tensor:
    """Patch each value head's values (``hook_v``; kv heads under grouped-query attention): ``Tensor[layer,
    kv_head]``, or ``[layer, pos, kv_head]`` with ``by_pos``."""
    model = as_hooked(model, "patch_head_v")
    return _heads(model, clean_tokens, corrupt_tokens, metric, "v", by_pos, positions, layers, batch_size,
                  memory_budget, progress)


def patch_head_pattern(model, clean_tokens, corrupt_tokens, metric: Metric, *, by_pos: bool = False,
                       positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                       batch_size: int | None = None, memory_budget: BudgetLike = None,
                       progress: bool = True) -> Tensor:
    """Patch each head's attention pattern (``hook_pattern``): ``Tensor[layer, head]`` (the whole pattern), or with
    ``by_pos`` one query row at a time, ``Tensor[layer, head, dest_pos]`` (TransformerLens
    ``get_act_patch_attn_head_pattern_all_pos`` / ``_by_pos``)."""
    model = as_hooked(model, "patch_head_pattern")
    key = "pattern_by_dest" if by_pos else "pattern"
    return patch_activations(model, clean_tokens, corrupt_tokens, metric, key, positions=positions, layers=layers,
                             batch_size=batch_size, memory_budget=memory_budget, progress=progress)
