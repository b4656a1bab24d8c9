"""Activation patching: the batched engine equals one hooked forward per cell, on every architecture and site."""

import pytest
import torch

from interp import patching
from interp.patching.activation import run_patching
from interp.patching.sites import SITES

TRANSFORMER_SITES = ["resid", "resid_mid", "resid_post", "attn_out", "mlp_out", "heads", "heads_by_pos", "q",
                     "k_by_pos", "v", "q_by_pos", "pattern", "pattern_by_dest"]
MAMBA_SITES = ["resid", "mixer_out", "x", "gate", "conv", "dt", "B", "C", "ssm_state", "ssm", "out"]
CASES = [(a, s) for a in ("llama", "gpt2") for s in TRANSFORMER_SITES] + \
    [(a, s) for a in ("mamba", "mamba2") for s in MAMBA_SITES]


def _metric(n=2):
    return patching.logit_diff(torch.tensor([5, 6][:n]), torch.tensor([7, 8][:n]))


@pytest.mark.parametrize("arch,site", CASES)
def test_equals_a_plain_loop(tiny, prompt_pair, plain_patching, arch, site):
    model = tiny(arch)
    clean, corrupt = prompt_pair()
    metric = _metric()
    run = run_patching(model, clean, corrupt, metric, site, progress=False)
    kind = SITES[site]
    ref = plain_patching(model, clean, corrupt, metric, kind.role, kind.axes, run.layers, run.positions, run.heads)
    assert run.values.shape == ref.shape
    torch.testing.assert_close(run.values, ref, atol=1e-4, rtol=0)
    assert float(ref.max() - ref.min()) > 0.05  # the patches matter, so a wrong one would show
    torch.testing.assert_close(torch.tensor(run.corrupt_metric), metric(model(corrupt)).mean())
    torch.testing.assert_close(torch.tensor(run.clean_metric), metric(model(clean)).mean())


def test_specialised_functions_are_the_engine(tiny, prompt_pair):
    model = tiny("llama")
    clean, corrupt = prompt_pair()
    metric = _metric()
    pairs = [(patching.patch_residual, "resid"), (patching.patch_resid_mid, "resid_mid"),
             (patching.patch_attn_out, "attn_out"), (patching.patch_mlp_out, "mlp_out")]
    for fn, site in pairs:
        torch.testing.assert_close(fn(model, clean, corrupt, metric, progress=False),
                                   patching.patch_activations(model, clean, corrupt, metric, site, progress=False))
    for fn, site in [(patching.patch_heads, "heads"), (patching.patch_head_q, "q"), (patching.patch_head_k, "k"),
                     (patching.patch_head_v, "v"), (patching.patch_head_pattern, "pattern")]:
        for by_pos in (False, True):
            key = site if not by_pos else ("pattern_by_dest" if site == "pattern" else f"{site}_by_pos")
            torch.testing.assert_close(fn(model, clean, corrupt, metric, by_pos=by_pos, progress=False),
                                       patching.patch_activations(model, clean, corrupt, metric, key, progress=False))
    mamba = tiny("mamba")
    torch.testing.assert_close(patching.patch_ssm_state(mamba, clean, corrupt, metric, progress=False),
                               patching.patch_mixer(mamba, clean, corrupt, metric, "ssm_state", progress=False))
    torch.testing.assert_close(patching.patch_mixer_out(mamba, clean, corrupt, metric, progress=False),
                               patching.patch_activations(mamba, clean, corrupt, metric, "mixer_out", progress=False))


@pytest.mark.parametrize("arch", ["llama", "mamba2"])
def test_chunking_and_selection_do_not_change_results(tiny, prompt_pair, arch):
    model = tiny(arch)
    clean, corrupt = prompt_pair(T=9)
    metric = _metric()
    full = patching.patch_residual(model, clean, corrupt, metric, progress=False)
    for kwargs in ({"batch_size": 1}, {"batch_size": 3}, {"memory_budget": 50_000_000}):
        torch.testing.assert_close(patching.patch_residual(model, clean, corrupt, metric, progress=False, **kwargs),
                                   full, atol=1e-4, rtol=0)
    part = patching.patch_residual(model, clean, corrupt, metric, positions=[-1, 2], layers=[1], progress=False)
    torch.testing.assert_close(part, full[[1]][:, [8, 2]], atol=1e-4, rtol=0)


def test_cells_before_the_first_difference_are_exactly_the_corrupted_run(tiny, prompt_pair):
    model = tiny("llama")
    clean, corrupt = prompt_pair(changed=(4,))
    metric = _metric()
    out = patching.patch_residual(model, clean, corrupt, metric, progress=False)
    base = metric(model(corrupt)).mean()
    assert bool((out[:, :4] == base).all())
    assert not bool((out[:, 4] == base).all())


def test_generic_callable_metric_and_per_prompt_answers(tiny, prompt_pair, plain_patching):
    model = tiny("gpt2")
    clean, corrupt = prompt_pair(n=3)

    def metric(logits):  # reads two positions: not a Metric, gets the full logits
        return logits[:, -1, 5] - logits[:, 2, 9]

    out = patching.patch_attn_out(model, clean, corrupt, metric, progress=False)
    ref = plain_patching(model, clean, corrupt, metric, "attn_out", ("layer", "pos"), [0, 1], list(range(8)), [])
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    per_prompt = patching.target_prob([5, 9, 11])
    out = patching.patch_residual(model, clean, corrupt, per_prompt, progress=False)
    ref = plain_patching(model, clean, corrupt, per_prompt, "resid_pre", ("layer", "pos"), [0, 1], list(range(8)), [])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_text_metrics_bind_to_the_model(tiny):
    model = tiny("llama")
    metric = patching.logit_diff("a", "b")
    logits = torch.randn(2, 4, model.d_vocab)
    with pytest.raises(ValueError, match="bind"):
        metric(logits)
    bound = metric.bind(model)
    a, b = model.to_single_token("a"), model.to_single_token("b")
    torch.testing.assert_close(bound(logits), logits[:, -1, a] - logits[:, -1, b])
    out = patching.patch_residual(model, "xaybz", "xcybz", metric, progress=False)
    assert out.shape == (2, 6)
    prob = patching.target_prob(a, pos=1)
    torch.testing.assert_close(prob(logits), logits[:, 1].softmax(-1)[:, a])


def test_metric_positions_in_their_order_and_a_head_that_is_not_w_u(tiny, prompt_pair, plain_patching, monkeypatch):
    """A Metric reading several positions gets them in its own order; a model whose logits are not
    apply_ln_final @ W_U + b_U makes the engine run the model's own head (checked once on the corrupted run)."""
    from interp.patching.metrics import Metric

    class TwoPositions(Metric):
        positions = (6, 2)
        name = "two"

        def at_positions(self, logits):
            return logits[:, 0, 5] - 2 * logits[:, 1, 9]

    model = tiny("llama")
    clean, corrupt = prompt_pair()
    metric = TwoPositions()
    ref = plain_patching(model, clean, corrupt, metric, "resid_pre", ("layer", "pos"), [0, 1], list(range(8)), [])
    torch.testing.assert_close(patching.patch_residual(model, clean, corrupt, metric, progress=False), ref,
                               atol=1e-4, rtol=0)
    monkeypatch.setattr(model, "apply_ln_final", lambda x: 2 * x)  # what the engine would unembed with
    torch.testing.assert_close(patching.patch_residual(model, clean, corrupt, metric, progress=False), ref,
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(patching.patch_residual(model, clean, corrupt, lambda lg: lg[:, -1, 3] - lg[:, 1, 4],
                                                       progress=False),
                               plain_patching(model, clean, corrupt, lambda lg: lg[:, -1, 3] - lg[:, 1, 4],
                                              "resid_pre", ("layer", "pos"), [0, 1], list(range(8)), []),
                               atol=1e-4, rtol=0)
