"""Fixtures for the tracing tests: tiny models with visible effects and ROME's per-cell loop as the reference."""

import pytest
import torch

import interp
from interp.tracing.subject import prompt_tokens, subject_span
from interp.tracing.trace import subject_noise, trace_units, window_layers

PROMPT = "The Eiffel Tower is in Paris"


@pytest.fixture(scope="session")
def traced(tiny_dir):
    """``traced(arch) -> HookedModel`` with large random weights (initializer_range 0.3), built once."""
    built: dict = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = interp.load_model(tiny_dir(arch, seed=2, initializer_range=0.3))
        return built[arch]

    return get


def _rome_loop(model, prompt, subject, target_id, *, samples=10, noise=3.0, seed=0, site="resid", window=10,
               restore="token", sever=None) -> torch.Tensor:
    """ROME's causal trace written out plainly: one forward of the noised samples per (layer, unit), restoring with
    hooks on the full sequence; severing freezes the sublayer at layers >= the restored one, as ROME's code does.
    ``prompt``: text or token ids ``[1, pos]``; ``subject``: text or a ``(start, stop)`` token span."""
    tokens = prompt_tokens(model, prompt)
    start, stop = subject_span(model, tokens, subject)
    eps, _ = subject_noise(model, samples, stop - start, noise, seed)
    role = {"mlp": "mlp_out", "attn": "attn_out"}.get(site, site)
    sever_role = {"mlp": "mlp_out", "attn": "attn_out"}.get(sever, sever)
    L = model.n_layers
    names = [model.components(k)["resid_post"] for k in range(L)]
    if site != "resid":
        names += [model.components(k)[role] for k in range(L)]
    _, clean = model.run_with_cache(tokens, names_filter=names)

    def add_noise(act, hook):
        act = act.clone()
        act[:, start:stop] += eps
        return act

    corrupt = tokens.repeat(samples, 1)
    noised = {}
    if sever_role:
        sev_names = [model.components(k)[sever_role] for k in range(L)]
        _, noised = model.run_with_cache(corrupt, names_filter=sev_names, fwd_hooks=[("hook_embed", add_noise)])
    units = trace_units(tokens.shape[1], (start, stop), restore)
    out = torch.empty(L, len(units))
    for layer in range(L):
        for u, pos in enumerate(units):
            pos = list(pos)

            def restore_fn(act, hook, pos=pos):
                act = act.clone()
                act[:, pos] = clean[hook.name][:, pos]
                return act

            def freeze(act, hook, pos=pos):
                act = act.clone()
                act[:, pos] = noised[hook.name][:, pos]
                return act

            hooks = [("hook_embed", add_noise)]
            if site == "resid":
                hooks.append((model.components(layer)["resid_post"], restore_fn))
                if sever_role:
                    hooks += [(model.components(k)[sever_role], freeze) for k in range(layer, L)]
            else:
                hooks += [(model.components(k)[role], restore_fn) for k in window_layers(layer, window, L)]
            with torch.no_grad():
                logits = model.run_with_hooks(corrupt, fwd_hooks=hooks)
            out[layer, u] = logits[:, -1].float().softmax(-1)[:, target_id].mean()
    return out


@pytest.fixture(scope="session")
def rome_loop():
    return _rome_loop
