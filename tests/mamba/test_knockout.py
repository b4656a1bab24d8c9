"""Knockout (Endy et al. 2025 / Sharma et al. 2024): hooks on hook_y equal a brute-force shadow-state scan."""

from __future__ import annotations

import pytest
import torch

from interp.mamba.implicit_attention import implicit_attention, scan_sites, ssm_params
from interp.mamba.knockout import block_mask, knockout, knockout_hooks, run_with_knockout

T = 14


def _hooked(arch: str, path):
    import transformers as tf

    from interp.mamba import from_hf
    from interp.testing import make_tiny

    make_tiny(arch, path, seed=5)
    cls = tf.MambaForCausalLM if arch == "mamba" else tf.Mamba2ForCausalLM
    hf = cls.from_pretrained(path).to(torch.float64).eval()
    return from_hf(hf), hf


@pytest.fixture(scope="module", params=["mamba", "mamba2"])
def ko_pair(request, tmp_path_factory):
    return _hooked(request.param, tmp_path_factory.mktemp("ko-" + request.param))


@pytest.fixture(scope="module")
def model(ko_pair):
    return ko_pair[0]


def _tokens(seed: int, b: int = 2) -> torch.Tensor:
    return torch.randint(4, 100, (b, T), generator=torch.Generator().manual_seed(seed))


def shadow_scan(x, dt, A, B, C, D, blocked: torch.Tensor) -> torch.Tensor:
    """Brute force: for every target i, rerun the recurrence from scratch without B̄_j x_j for blocked j.

    ``blocked [b, T, T]`` (``[b, i, j]``); Mamba-1 ``x [b,T,d]``, B/C ``[b,T,N]``; Mamba-2 ``x [b,T,H,P]``,
    B/C ``[b,T,G,N]``. Returns y like x.
    """
    mamba2 = x.ndim == 4
    x, dt, A, B, C, D = (t.to(torch.float64) for t in (x, dt, A, B, C, D))
    if mamba2:
        rep = x.shape[2] // B.shape[2]
        B, C = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)  # [b, T, H, N]
    y = torch.empty_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            h = None
            for t in range(i + 1):
                keep = 0.0 if blocked[b, i, t] else 1.0
                if mamba2:  # h [H, P, N]
                    inc = keep * (dt[b, t, :, None] * x[b, t])[..., None] * B[b, t, :, None, :]
                    h = inc if h is None else torch.exp(dt[b, t] * A)[:, None, None] * h + inc
                else:  # h [d, N]
                    inc = keep * (dt[b, t] * x[b, t])[:, None] * B[b, t, None, :]
                    h = inc if h is None else torch.exp(dt[b, t, :, None] * A) * h + inc
            if mamba2:
                y[b, i] = (h * C[b, i, :, None, :]).sum(-1) + D[:, None] * x[b, i]
            else:
                y[b, i] = (h * C[b, i]).sum(-1) + D * x[b, i]
    return y


def _scan_cache(model, tokens, layers, fwd_hooks=()):
    names = [s for layer in layers for s in scan_sites(layer).values()]
    _, cache = model.run_with_cache(tokens, names_filter=names, fwd_hooks=fwd_hooks)
    return cache


@pytest.mark.parametrize("sources,targets", [([1, 4, 5], [5, 9, 13]), ([0, 2, 3, 7, 8], [-1, -4]), ([6], [2])])
def test_matches_shadow_state_scan(model, sources, targets):
    tokens = _tokens(0)
    layers = [0, 1]
    cache = _scan_cache(model, tokens, layers, knockout_hooks(model, sources, targets, layers))
    blocked = block_mask(sources, targets, 2, T)
    for layer in layers:  # each layer's reference from its own (already knocked-out upstream) inputs
        s = scan_sites(layer)
        A, D = ssm_params(model, layer)
        ref = shadow_scan(cache[s["x"]], cache[s["dt"]], A, cache[s["B"]], cache[s["C"]], D, blocked)
        torch.testing.assert_close(cache[s["y"]], ref, rtol=1e-9, atol=1e-9)


def test_all_sources_leave_own_contribution(model):
    tokens, i, layer = _tokens(1), 9, 1
    clean = _scan_cache(model, tokens, [layer])
    s = scan_sites(layer)
    ko = _scan_cache(model, tokens, [layer], knockout_hooks(model, list(range(i)), [i], layer))
    alpha = implicit_attention(model, tokens, layer)
    x, (_, D) = clean[s["x"]], ssm_params(model, layer)
    if model.arch == "mamba":
        own = alpha[:, :, i, i] * x[:, i] + D * x[:, i]
    else:
        own = alpha[:, :, i, i, None] * x[:, i] + D[:, None] * x[:, i]
    torch.testing.assert_close(ko[s["y"]][:, i], own, rtol=1e-9, atol=1e-9)
    assert (ko[s["y"]][:, i] - clean[s["y"]][:, i]).abs().max() > 1e-4  # the knockout did something
    others = [p for p in range(T) if p != i]
    torch.testing.assert_close(ko[s["y"]][:, others], clean[s["y"]][:, others], rtol=0, atol=0)


def test_context_manager_and_run_agree(model):
    tokens = _tokens(2)
    clean = model(tokens)
    logits = run_with_knockout(model, tokens, sources=[2, 3], targets=[-1])
    with knockout(model, sources=[2, 3], targets=[-1]):
        inside = model(tokens)
    torch.testing.assert_close(inside, logits, rtol=0, atol=0)
    torch.testing.assert_close(model(tokens), clean, rtol=0, atol=0)  # hooks are gone after the block
    torch.testing.assert_close(logits[:, :-1], clean[:, :-1], rtol=0, atol=0)  # only the target row moves
    assert (logits[:, -1] - clean[:, -1]).abs().max() > 1e-6


def test_bool_masks_equal_positions(model):
    tokens = _tokens(3)
    src = torch.zeros(T, dtype=torch.bool)
    src[[1, 2]] = True
    tgt = torch.zeros(2, T, dtype=torch.bool)
    tgt[:, 10] = True
    torch.testing.assert_close(
        run_with_knockout(model, tokens, src, tgt, layers=[0]),
        run_with_knockout(model, tokens, [1, 2], [10], layers=[0]), rtol=0, atol=0,
    )


@pytest.mark.parametrize("layer", [0, 1])
def test_mixer_mode_matches_hf_mixer_on_ablated_input(ko_pair, layer):
    """mode="mixer": target rows of hook_mixer_out equal HF's own mixer run on the layer input with the source
    positions zeroed (the original library as the reference); other rows are untouched."""
    model, hf = ko_pair
    tokens, sources, targets = _tokens(5), [3, 4, 8], [5, 9, 13]
    p = f"blocks.{layer}."
    names = [p + "hook_resid_pre", p + "hook_mixer_out"]
    _, clean = model.run_with_cache(tokens, names_filter=names)
    hooks = knockout_hooks(model, sources, targets, layer, mode="mixer")
    _, ko = model.run_with_cache(tokens, names_filter=names, fwd_hooks=hooks)
    hf_layer = hf.backbone.layers[layer]
    keep = torch.ones(1, T, 1, dtype=torch.float64)
    keep[:, sources] = 0
    with torch.no_grad():
        ref = hf_layer.mixer(hf_layer.norm(clean[p + "hook_resid_pre"]) * keep)
    out = ko[p + "hook_mixer_out"]
    # HF computes parts of the scan in float32 even for a float64 model, hence the float32-level tolerance
    torch.testing.assert_close(out[:, targets], ref[:, targets], rtol=1e-4, atol=1e-7)
    others = [i for i in range(T) if i not in targets]
    torch.testing.assert_close(out[:, others], clean[p + "hook_mixer_out"][:, others], rtol=0, atol=0)
    assert (out[:, targets] - clean[p + "hook_mixer_out"][:, targets]).abs().max() > 1e-4


def test_bad_input(model):
    tokens = _tokens(4)
    with pytest.raises(IndexError, match="sources"):
        run_with_knockout(model, tokens, sources=[T], targets=[0])
    with pytest.raises(ValueError, match="targets"):
        run_with_knockout(model, tokens, sources=[0], targets=[])
    with pytest.raises(ValueError, match="bool mask"):
        run_with_knockout(model, tokens, sources=torch.ones(3, dtype=torch.bool), targets=[1])
    with pytest.raises(IndexError, match="layer"):
        knockout_hooks(model, [0], [1], layers=[9])
    with pytest.raises(ValueError, match="mode"):
        knockout_hooks(model, [0], [1], mode="attention")


def subject_knockout_effect(name: str, mode: str = "mixer", n_prompts: int = 80) -> dict[str, float]:
    """Mean P(attribute) at the last prompt position on held-out prompts ending "... <subject> is": clean, with
    subject -> last knocked out in all layers, and a control knocking out as many non-subject positions (the
    first tokens after ``<bos>``) -> last."""
    from interp import zoo
    from interp.zoo.evaluate import _pad

    model = zoo.load(name)
    prompts = [p for p in zoo.facts(name, seed=777) if p.template.endswith("{s} is {a} .")][:n_prompts]
    tokens = _pad([list(p.tokens) for p in prompts], model.tokenizer.pad_token_id)
    b, T = tokens.shape
    last = torch.tensor([len(p.tokens) - 1 for p in prompts])
    targets = torch.zeros(b, T, dtype=torch.bool)
    targets[torch.arange(b), last] = True
    subject = torch.zeros(b, T, dtype=torch.bool)
    control = torch.zeros(b, T, dtype=torch.bool)
    for r, p in enumerate(prompts):
        s0, s1 = p.subject_span
        subject[r, s0:s1] = True
        control[r, 1 : 1 + s1 - s0] = True  # filler / template words, never the subject or the last position
    answer = torch.tensor([p.answer_id for p in prompts])

    def prob(logits):
        return logits[torch.arange(b), last].softmax(-1)[torch.arange(b), answer].mean().item()

    return {
        "clean": prob(model(tokens)),
        "subject_knocked": prob(run_with_knockout(model, tokens, subject, targets, mode=mode)),
        "control_knocked": prob(run_with_knockout(model, tokens, control, targets, mode=mode)),
    }


@pytest.mark.parametrize("name", ["mamba1-facts", "mamba2-facts"])
def test_subject_knockout_lowers_attribute_probability(name):
    """Sharma et al. 2024 / Endy et al. 2025: blocking subject -> last position (conv and scan, all layers) hurts
    recall far more than blocking as many other positions."""
    eff = subject_knockout_effect(name)
    assert eff["subject_knocked"] < 0.5 * eff["clean"], eff
    assert eff["clean"] - eff["subject_knocked"] > 2 * (eff["clean"] - eff["control_knocked"]), eff
