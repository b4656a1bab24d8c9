"""SmolLM2 (integration tier, kept short): the fast path equals one hooked forward per cell, and attribution
patching's correlation with exact patching."""

import pytest
import torch

from interp import patching

pytestmark = pytest.mark.integration

CLEAN = "The Eiffel Tower is located in the city of"
CORRUPT = "The Colosseum is located in the city of"


def test_residual_and_heads_equal_a_per_cell_loop(smollm2, plain_patching):
    model = smollm2
    clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
    metric = patching.logit_diff(" Paris", " Rome").bind(model)
    layers, positions = [0, 13, 29], [2, 4, 10]
    out = patching.patch_residual(model, clean, corrupt, metric, layers=layers, positions=positions, progress=False)
    ref = plain_patching(model, clean, corrupt, metric, "resid_pre", ("layer", "pos"), layers, positions, [])
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    assert float(ref.max() - ref.min()) > 1.0
    out = patching.patch_heads(model, clean, corrupt, metric, by_pos=True, layers=[15], positions=[4, 10],
                               progress=False)
    ref = plain_patching(model, clean, corrupt, metric, "z", ("layer", "pos", "head"), [15], [4, 10],
                         list(range(model.n_heads)))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_attribution_correlates_with_exact_patching(smollm2):
    """The figure the README reports (printed with -s)."""
    model = smollm2
    metric = patching.logit_diff(" Paris", " Rome")
    clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
    base = float(metric.bind(model)(model(corrupt)).mean())
    attr = patching.attribution_patch(model, clean, corrupt, metric, sites=["resid", "attn_out", "mlp_out"])
    rs = {}
    for site in attr:
        exact = patching.patch_activations(model, clean, corrupt, metric, site, progress=False) - base
        rs[site] = float(torch.corrcoef(torch.stack([attr[site].flatten(), exact.flatten()]))[0, 1])
    print("attribution vs exact patching on SmolLM2, Pearson r:", {k: round(v, 3) for k, v in rs.items()})
    assert rs["resid"] > 0.6 and rs["attn_out"] > 0.8 and rs["mlp_out"] > 0.4  # measured 0.78, 0.92, 0.51

