"""Causal tracing: which hidden states carry a fact (Meng et al. 2022, "Locating and Editing Factual Associations
in GPT" (ROME), section 2.1; for Mamba, Sharma et al. 2024, "Locating and Editing Factual Associations in Mamba").

The protocol, as implemented here:

1. Clean run on the prompt; the target ``o`` is the model's top next token unless given. ``P_clean(o)``.
2. Corrupted runs: Gaussian noise of std ``noise x std(W_E)`` (the standard deviation of the embedding matrix's
   entries; ``noise = 3`` by default) added to the token embeddings (``hook_embed``) of the subject's tokens, one
   fixed draw per sample (``samples = 10``). ``P_corrupt(o)`` is the mean over samples.
3. For each layer l and token i: the corrupted runs with the clean hidden state at (l, i) restored; the indirect
   effect is ``IE = P_restored(o) - P_corrupt(o)`` (means over the same samples) and the total effect
   ``TE = P_clean(o) - P_corrupt(o)``. The hidden state of layer l is the block's output (``hook_resid_post``, as
   ROME's ``transformer.h.{l}``).
4. ``site="mlp"`` / ``"attn"`` (Mamba: a mixer component, ``"conv"``, ``"ssm"``, ``"gate"``, ``"out"``, ... as in
   Sharma et al.) restore that sublayer's output at token i in a window of ``window`` layers around l: layers
   ``max(0, l - window // 2) .. min(n_layers, l - (-window // 2)) - 1`` (ROME's ``trace_important_window``).
5. ``restore="span"`` restores the whole subject at once (one row of the result for the subject); other tokens
   stay single. ``sever="mlp"`` / ``"attn"`` / a component: ROME's severed causal graph -- while the hidden state at
   (l, i) is restored, that sublayer's output at token i in layers after l is frozen at its corrupted value.

Batched with the patching engine (:mod:`interp.patching.engine`): every (layer, token) restoration of every
sample shares batched forwards that start at the restored layer and position, reuse the corrupted runs' keys and
values (or Mamba states) for the positions before it, and skip tokens before the subject (their clean and
corrupted states are identical, so their effect is exactly 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from interp.models.loading import as_hooked
from interp.models.memory import BudgetLike
from interp.patching.engine import Patch, Variant, run_variants
from interp.patching.metrics import target_prob
from interp.patching.sites import set_positions
from interp.tracing.result import TraceResult
from interp.tracing.subject import prompt_tokens, subject_span

__all__ = ["causal_trace", "trace_units", "window_layers", "subject_noise"]

_ROLE = {"mlp": "mlp_out", "attn": "attn_out"}


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """ROME's window of ``window`` layers around ``layer``."""
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


def trace_units(T: int, span: tuple[int, int], restore: str) -> list[tuple[int, ...]]:
    """Positions restored together: one per token, or (``"span"``) the subject as one unit and the others alone."""
    if restore == "token":
        return [(i,) for i in range(T)]
    if restore == "span":
        start, stop = span
        return [(i,) for i in range(start)] + [tuple(range(start, stop))] + [(i,) for i in range(stop, T)]
    raise ValueError(f"restore must be 'token' or 'span'; got {restore!r}")


def subject_noise(model, samples: int, n_tokens: int, noise: float, seed: int) -> tuple[Tensor, float]:
    """The noise added to the subject's embeddings, ``[samples, n_tokens, d_model]``, and its std
    (``noise x std(W_E)``), drawn from a CPU generator seeded with ``seed``."""
    std = float(model.W_E.detach().float().std()) * float(noise)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(samples, n_tokens, model.d_model, generator=gen) * std, std


def _role(model, site: str, arg: str) -> str:
    role = _ROLE.get(site, site)
    roles = model.components(0)
    if role not in roles or role in ("pattern", "attn_scores", "resid_pre", "resid_post"):
        options = ["resid"] + [k for k, v in _ROLE.items() if v in roles] + \
            [r for r in ("conv", "ssm", "gate", "out", "x", "dt", "B", "C", "ssm_state", "mixer_out") if r in roles]
        raise KeyError(f"{arg}={site!r}: this {model.arch} model cannot trace that site; expected one of "
                       f"{', '.join(options)}")
    return role


def _check_int(value, arg: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{arg} must be an int >= {low}; got {value!r}")
    return value


def causal_trace(model, prompt, subject, target=None, *, samples: int = 10, noise: float = 3.0, site: str = "resid",
                 window: int = 10, restore: str = "token", sever: str | None = None, seed: int = 0,
                 layers: Sequence[int] | None = None, batch_size: int | None = None,
                 memory_budget: BudgetLike = None, progress: bool = True) -> TraceResult:
    """Causal trace of ``prompt`` (see the module docstring for the protocol) -> :class:`TraceResult` with the
    restored probability per (layer, token or span), the indirect and total effects, and a ROME-style heatmap.

    ``subject``: text in the prompt (the entity without its article, e.g. ``"Eiffel Tower"``) or a ``(start, stop)``
    token span. ``target``: the answer token (``" Paris"`` or an id); default the model's top prediction.
    ``noise``: multiple of ``std(W_E)``. ``site``: ``"resid"``, ``"mlp"``, ``"attn"``, or a Mamba component
    (``"conv"``, ``"ssm"``, ``"gate"``, ``"out"``, ...); ``window`` applies to the non-residual sites.
    ``sever`` (with ``site="resid"``): freeze that sublayer at its corrupted value after the restored layer.
    ``layers``: trace only these layers (rows of the result; default all).
    """
    model = as_hooked(model, "causal_trace")
    tokens = prompt_tokens(model, prompt)
    T = tokens.shape[1]
    layers = model.check_layers(layers)
    span = subject_span(model, tokens, subject)
    samples, window = _check_int(samples, "samples", 1), _check_int(window, "window", 1)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise <= 0:
        raise ValueError(f"noise must be a positive number (a multiple of std(W_E)); got {noise!r}")
    units = trace_units(T, span, restore)
    role = None if site == "resid" else _role(model, site, "site")
    sever_role = None if sever is None else _role(model, sever, "sever")
    if sever_role is not None and role is not None:
        raise ValueError("sever applies to site='resid' (ROME freezes a sublayer while restoring hidden states)")
    if "hook_embed" not in model.site_names():
        raise KeyError("causal tracing adds noise at hook_embed, which this model does not have")
    with torch.no_grad():
        clean_logits = model(tokens)
    probs = clean_logits[0, -1].float().softmax(-1)
    target_id = int(probs.argmax()) if target is None else (
        model.to_single_token(target) if isinstance(target, str) else int(target))
    if not 0 <= target_id < model.d_vocab:
        raise ValueError(f"target id {target_id} is outside the vocabulary 0..{model.d_vocab - 1}")
    eps, std = subject_noise(model, samples, span[1] - span[0], noise, seed)

    def add_noise(act: Tensor, *, hook) -> Tensor:
        out = act.clone()
        out[:, span[0]:span[1]] += eps.to(act.device, act.dtype)
        return out

    names, variants, cells = set(), [], []
    for li, layer in enumerate(layers):
        for u, positions in enumerate(units):
            patches = _patches(model, layer, positions, role, sever_role, window)
            names.update(p.site for p in patches if p.source == "clean")
            variants.append(Variant(patches, min(positions)))
            cells.append((li, u))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=sorted(names))
    metric = target_prob(target_id)
    values, corrupt = run_variants(model, tokens.repeat(samples, 1), variants, metric, dict(cache.items()),
                                   corrupt_hooks=[("hook_embed", add_noise)], batch_size=batch_size,
                                   memory_budget=memory_budget, progress=progress, desc=f"tracing {site}")
    scores = torch.empty(len(layers), len(units))
    for (layer, u), value in zip(cells, values.tolist()):
        scores[layer, u] = value
    strs = [str(s) for s in model.to_str_tokens(tokens[0])] if model.tokenizer is not None else \
        [str(t) for t in tokens[0].tolist()]
    target_str = model.to_string([target_id]) if model.tokenizer is not None else str(target_id)
    return TraceResult(
        prompt=prompt if isinstance(prompt, str) else "".join(strs), str_tokens=strs, subject_span=span,
        target=target_str, target_id=target_id, site=site, restore=restore, window=window if role else 1,
        sever=sever, samples=samples, noise=float(noise), noise_std=std, seed=seed, p_clean=float(probs[target_id]),
        p_corrupt=float(corrupt.mean()), scores=scores, units=[list(u) for u in units], layers=layers)


def _patches(model, layer: int, positions: tuple[int, ...], role: str | None, sever_role: str | None,
             window: int) -> tuple[Patch, ...]:
    L = model.n_layers
    if role is None:  # the block's output = the next block's input (the engine then starts one block later)
        site = model.components(layer + 1)["resid_pre"] if layer + 1 < L else model.components(layer)["resid_post"]
        patches = [Patch(min(layer + 1, L - 1), site, set_positions, positions)]
        if sever_role is not None:
            patches += [Patch(k, model.components(k)[sever_role], set_positions, positions, source="corrupt")
                        for k in range(layer + 1, L)]
        return tuple(patches)
    return tuple(Patch(k, model.components(k)[role], set_positions, positions)
                 for k in window_layers(layer, window, L))
