"""SmolLM2 (integration tier, kept short): causal-trace cells against ROME's loop."""

import pytest
import torch

from interp import tracing

pytestmark = pytest.mark.integration

CLEAN = "The Eiffel Tower is located in the city of"
def test_causal_trace_cells_equal_rome_loop(smollm2):
    from interp.tracing.subject import subject_span
    from interp.tracing.trace import subject_noise

    model = smollm2
    layers = [3, 15, 28]
    result = tracing.causal_trace(model, CLEAN, "Eiffel Tower", " Paris", samples=4, layers=layers, progress=False)
    tokens = model.to_tokens(CLEAN)
    start, stop = subject_span(model, tokens, "Eiffel Tower")
    assert (start, stop) == (2, 5)
    eps, _ = subject_noise(model, 4, stop - start, 3.0, 0)
    names = [model.components(layer)["resid_post"] for layer in layers]
    _, clean = model.run_with_cache(tokens, names_filter=names)

    def noise(act, hook):
        act = act.clone()
        act[:, start:stop] += eps
        return act

    for li, name in enumerate(names):
        for pos in (3, 4, 10):
            def restore(act, hook, pos=pos, name=name):
                act = act.clone()
                act[:, pos] = clean[name][:, pos]
                return act

            with torch.no_grad():
                logits = model.run_with_hooks(tokens.repeat(4, 1), fwd_hooks=[("hook_embed", noise), (name, restore)])
            p = float(logits[:, -1].softmax(-1)[:, result.target_id].mean())
            assert float(result.scores[li, pos]) == pytest.approx(p, abs=1e-4)
    assert result.total_effect > 0.1
