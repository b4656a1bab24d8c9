"""Mean head outputs and each head's causal indirect effect on an in-context task (Todd et al. 2024, "Function
Vectors in Large Language Models", ICLR, section 2.1).

Mean activation (eq. 1): ``a_bar[l, h] = mean over clean ICL prompts of head (l, h)'s output at the last token``, in
residual-stream space: ``attn.hook_result`` (``z @ W_O`` per head, ``[batch, pos, head, d_model]``; under grouped-query
attention one per query head).

Causal indirect effect (eq. 2): on corrupted ICL prompts (shuffled labels), replace head (l, h)'s output at the last
token by ``a_bar[l, h]`` and measure the gain in the probability of the correct answer,
``CIE(l, h) = mean over prompts of P(y | patched) - P(y | corrupted)``.

Speed: every head's condition is a variant of the one batched patching engine (:mod:`interp.patching.engine`):
the patch is at the last position, so each variant starts from the cached corrupted residual at its layer and
computes the last position only (the earlier positions' keys and values are the corrupted run's), and many heads'
variants share one batched forward. The engine caches the corrupted ``hook_result`` of the patched layers, so the
layers go through it ``layers_per_pass`` at a time. ``tests/function_vectors/test_fv_heads.py`` checks the result
against a plain loop of one hooked forward per head.
"""

from __future__ import annotations

from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import CapabilityError

__all__ = ["require_heads", "mean_head_outputs", "causal_indirect_effects"]


def require_heads(model, what: str = "function vectors") -> None:
    """Raise :class:`~interp.errors.CapabilityError` unless ``model`` has attention heads with ``attn.hook_result``."""
    if getattr(model, "has_attention_heads", False) and "result" in model.components(0):
        return
    has = []
    if getattr(model, "has_ssm_heads", False):
        has.append("SSM heads (model.has_ssm_heads; Mamba-2)")
    if getattr(model, "has_implicit_attention", False):
        has.append("implicit attention (model.attention_patterns)")
    roles = sorted(model.components(0))
    raise CapabilityError(
        f"{what}: this {model.arch} model has no attention heads (no attn.hook_result site), which the head-based "
        f"protocol of Todd et al. patches; it has {', '.join(has) or 'no heads'} and per-layer sites "
        f"{roles}; the nearest equivalent is a residual-stream or mixer_out vector (e.g. interp.probes.steer)")


def _check_tokens(tokens: Tensor, arg: str) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype.is_floating_point or not tokens.numel():
        got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"{arg} must be integer token ids [n, pos] of prompts of one length; got {got}")
    return tokens


def mean_head_outputs(model, tokens: Tensor, *, batch_size: int = 16, progress: bool = False) -> Tensor:
    """Each head's output at the last token (``attn.hook_result``), averaged over the prompts ``tokens [n, pos]``:
    ``[layer, head, d_model]`` (Todd et al. eq. 1)."""
    import torch

    require_heads(model, "mean_head_outputs")
    tokens = _check_tokens(tokens, "tokens")
    names = [model.components(layer)["result"] for layer in range(model.n_layers)]
    total: dict[str, Tensor] = {}

    def keep(act: Tensor, *, hook) -> None:
        last = act[:, -1].detach().double().sum(0)
        total[hook.name] = last if hook.name not in total else total[hook.name] + last

    chunks = list(torch.split(tokens, batch_size))
    with torch.no_grad(), model.hooks([(n, keep) for n in names]):
        for chunk in tqdm(chunks, desc="mean head outputs", disable=not progress, leave=False):
            model(chunk, return_type=None)
    return torch.stack([total[n] for n in names]).div(tokens.shape[0]).to(model.W_E.dtype)


def causal_indirect_effects(model, corrupt_tokens: Tensor, answers: Tensor, means: Tensor, *,
                            layers_per_pass: int = 6, memory_budget: int | None = None,
                            progress: bool = False) -> tuple[Tensor, Tensor]:
    """``(cie [layer, head], p_corrupt [n])``: per head, the mean over the corrupted prompts of
    ``P(answer | head's last-token output := means[l, h]) - P(answer | corrupted)`` (Todd et al. eq. 2), and the
    corrupted probability of each prompt's answer.

    ``corrupt_tokens [n, pos]``: corrupted (shuffled-label) ICL prompts; ``answers [n]``: each prompt's correct
    token id; ``means [layer, head, d_model]``: :func:`mean_head_outputs` of clean prompts.
    """
    import torch

    from interp.patching.engine import Patch, Variant, run_variants
    from interp.patching.metrics import target_prob
    from interp.patching.sites import set_pos_head

    require_heads(model, "causal_indirect_effects")
    corrupt_tokens = _check_tokens(corrupt_tokens, "corrupt_tokens")
    n, T = corrupt_tokens.shape
    if not isinstance(answers, Tensor) or answers.shape != (n,):
        raise ValueError(f"answers must be a Tensor [{n}] (one token id per prompt); got "
                         f"{tuple(answers.shape) if isinstance(answers, Tensor) else type(answers).__name__}")
    shape = (model.n_layers, model.n_heads, model.d_model)
    if not isinstance(means, Tensor) or tuple(means.shape) != shape:
        got = tuple(means.shape) if isinstance(means, Tensor) else type(means).__name__
        raise ValueError(f"means must be [layer, head, d_model] = {list(shape)} (mean_head_outputs); got {got}")
    if isinstance(layers_per_pass, bool) or not isinstance(layers_per_pass, int) or layers_per_pass < 1:
        raise ValueError(f"layers_per_pass must be a positive int; got {layers_per_pass!r}")
    metric = target_prob(answers.tolist())
    cie = torch.empty(model.n_layers, model.n_heads)
    p_corrupt = None
    groups = [list(range(s, min(s + layers_per_pass, model.n_layers)))
              for s in range(0, model.n_layers, layers_per_pass)]
    for layers in tqdm(groups, desc="CIE (layer groups)", disable=not progress, leave=False):
        names = {layer: model.components(layer)["result"] for layer in layers}
        # the source every patch reads: the mean at the last position, broadcast over prompts (a view, no copy)
        clean = {names[layer]: means[layer][None, None].expand(1, T, *shape[1:]) for layer in layers}
        variants = [Variant((Patch(layer, names[layer], set_pos_head, (T - 1, h)),), T - 1)
                    for layer in layers for h in range(model.n_heads)]
        values, corrupt_metric = run_variants(model, corrupt_tokens, variants, metric, clean,
                                              memory_budget=memory_budget, progress=False)
        p_corrupt = corrupt_metric
        cie[layers] = (values - corrupt_metric.mean()).view(len(layers), model.n_heads)
    return cie.detach(), p_corrupt.detach()
