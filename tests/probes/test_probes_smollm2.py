"""Probes on the real SmolLM2 (integration tier): padded batches read each text's last real token, and a small
sentiment sweep finds the property with positive selectivity in the middle layers."""

import pytest
import torch

from interp.probes import collect_activations, layer_sweep
from interp.probes.datasets import sentiment_texts

pytestmark = pytest.mark.integration


def test_last_real_token_of_unequal_texts(smollm2):
    texts = ["The food was great.", "Honestly, I thought that the long concert was rather dull.", "Bad."]
    sites = ["blocks.3.hook_resid_post", "blocks.12.hook_resid_post"]
    acts = collect_activations(smollm2, texts, sites, "last", batch_size=3, progress=False)
    for i, text in enumerate(texts):
        _, cache = smollm2.run_with_cache(text, names_filter=sites)
        for site in sites:
            torch.testing.assert_close(acts[site][i], cache[site][0, -1], rtol=1e-4, atol=1e-4)


def test_sentiment_sweep_has_selectivity(smollm2):
    data = sentiment_texts(160, negation=False, seed=0)
    r = layer_sweep(smollm2, list(data.texts), list(data.labels), ["blocks.0.hook_resid_post",
                    "blocks.10.hook_resid_post"], "last", folds=4, control_types=list(data.types), batch_size=32,
                    progress=False)
    assert float(r.accuracy[1]) > 0.9 and float(r.selectivity[1]) > 0.1
    assert float(r.accuracy[1]) > float(r.accuracy[0])
