"""Path patching: the effect of sender heads on the output through chosen receivers only.

Wang et al. 2022, "Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small",
section 3.1 and appendix B. With ``clean`` the original input and ``corrupt`` the counterfactual one:

1. run ``clean`` with the senders' outputs (``hook_z`` of the given heads) taken from ``corrupt`` and every other
   head's output -- and, with ``freeze_mlps``, every MLP output -- frozen at its clean value, so the senders'
   change reaches the receivers only directly (through the residual stream), and record the receivers;
2. run ``clean`` with only the receivers replaced by what step 1 recorded (everything downstream recomputed);
3. the metric of that run (mean over prompts) is the path-patched value; compare with the clean metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from interp.errors import CapabilityError
from interp.models.loading import as_hooked
from interp.patching.inputs import pair_tokens
from interp.patching.metrics import bind_metric, evaluate_metric

__all__ = ["path_patch"]

Receiver = str | tuple[str, int | Sequence[int]]


def _senders(model, senders) -> dict[int, list[int]]:
    if isinstance(senders, tuple) and len(senders) == 2 and all(isinstance(x, int) for x in senders):
        senders = [senders]
    if not senders:
        raise ValueError("senders is empty; pass (layer, head) pairs")
    out: dict[int, list[int]] = {}
    for item in senders:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"senders: {item!r} is not a (layer, head) pair")
        layer = model.check_layer(item[0], "senders")
        head = item[1]
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < model.n_heads:
            raise IndexError(f"senders: head {head!r} is out of range; this model has heads 0..{model.n_heads - 1}")
        out.setdefault(layer, []).append(head)
    return out


def _receivers(model, receivers) -> list[tuple[str, list[int] | None]]:
    if isinstance(receivers, str) or (isinstance(receivers, tuple) and len(receivers) == 2
                                      and isinstance(receivers[0], str) and not isinstance(receivers[1], str)):
        receivers = [receivers]
    if not receivers:
        raise ValueError("receivers is empty; pass site names, or (site, heads) pairs for per-head sites")
    out = []
    for item in receivers:
        site, heads = (item, None) if isinstance(item, str) else item
        model.check_site(site)
        if heads is not None:
            heads = [heads] if isinstance(heads, int) else list(heads)
        out.append((site, heads))
    return out


def path_patch(model, clean_tokens, corrupt_tokens, metric, senders: Sequence[tuple[int, int]],
               receivers: Sequence[Receiver], *, freeze_mlps: bool = True) -> Tensor:
    """Metric (mean over prompts) of the clean run in which the ``senders`` (``(layer, head)`` pairs) take their
    corrupted outputs and that change reaches the output only through ``receivers`` (Wang et al. 2022; see the
    module docstring for the three steps).

    ``receivers``: site names (e.g. ``"blocks.9.attn.hook_q"``, ``"blocks.11.hook_resid_post"``) or
    ``(site, heads)`` to recompute only some heads of a per-head site (``[batch, pos, head, ...]``). Receivers
    should come after the senders; a receiver the senders cannot reach simply keeps its clean value. With
    ``freeze_mlps=False`` MLPs are recomputed in step 1 (paths through MLPs count as direct).
    """
    model = as_hooked(model, "path_patch")
    if not model.has_attention_heads:
        raise CapabilityError(f"path_patch: this {model.arch} model has no attention heads (senders are heads)")
    clean, corrupt = pair_tokens(model, clean_tokens, corrupt_tokens)
    send = _senders(model, senders)
    recv = _receivers(model, receivers)
    metric = bind_metric(metric, model)
    z = {layer: model.components(layer)["z"] for layer in range(model.n_layers)}
    mlp = [model.components(layer)["mlp_out"] for layer in range(model.n_layers)] if freeze_mlps else []
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=[*z.values(), *mlp])
        _, corrupt_cache = model.run_with_cache(corrupt, names_filter=[z[layer] for layer in send])

        def freeze(act: Tensor, *, hook) -> Tensor:
            out = clean_cache[hook.name].clone()
            heads = send.get(hook.layer, [])
            if heads and hook.name == z[hook.layer]:
                out[:, :, heads] = corrupt_cache[hook.name][:, :, heads]
            return out

        recv_sites = sorted({site for site, _ in recv})
        step1 = [(site, freeze) for site in [*z.values(), *mlp]]
        _, recorded = model.run_with_cache(clean, names_filter=recv_sites, fwd_hooks=step1)

        def patch(act: Tensor, *, hook) -> Tensor:
            out = act.clone()
            for site, heads in recv:
                if site != hook.name:
                    continue
                if heads is None:
                    out = recorded[site].clone()
                else:
                    if out.ndim < 3 or max(heads) >= out.shape[2] or min(heads) < 0:
                        raise IndexError(f"receiver {site!r}: heads {heads} do not index axis 2 of its activation "
                                         f"{tuple(out.shape)} ([batch, pos, head, ...])")
                    out[:, :, heads] = recorded[site][:, :, heads]
            return out

        logits = model.run_with_hooks(clean, fwd_hooks=[(site, patch) for site in recv_sites])
    return evaluate_metric(metric, logits, clean.shape[0]).mean()
