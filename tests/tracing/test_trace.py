"""Causal tracing (Meng et al. 2022) equals ROME's per-cell loop; the protocol's pieces; bad input."""

import pytest
import torch

from interp import tracing
from interp.tracing.subject import subject_span

PROMPT = "The Eiffel Tower is in Paris"
CASES = [("llama", dict()), ("llama", dict(site="mlp", window=2)), ("llama", dict(site="attn", window=1)),
         ("llama", dict(restore="span")), ("llama", dict(sever="mlp")), ("llama", dict(sever="attn", samples=3)),
         ("gpt2", dict(site="mlp", window=3, restore="span")), ("mamba", dict()), ("mamba", dict(site="ssm", window=2)),
         ("mamba", dict(site="conv", window=1)), ("mamba2", dict(site="gate", window=2)),
         ("mamba2", dict(site="out", window=2, restore="span")), ("mamba2", dict(sever="ssm"))]


@pytest.mark.parametrize("arch,kwargs", CASES, ids=[f"{a}-{'-'.join(map(str, k.values())) or 'resid'}"
                                                    for a, k in CASES])
def test_equals_rome_loop(traced, rome_loop, arch, kwargs):
    model = traced(arch)
    result = tracing.causal_trace(model, PROMPT, "Eiffel Tower", progress=False, **kwargs)
    ref = rome_loop(model, PROMPT, "Eiffel Tower", result.target_id, **kwargs)
    torch.testing.assert_close(result.scores, ref, atol=1e-5, rtol=0)
    assert float(result.indirect_effect.abs().max()) > 1e-3  # restoring matters somewhere
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        probs = model(tokens)[0, -1].softmax(-1)
    assert result.target_id == int(probs.argmax())
    assert result.p_clean == pytest.approx(float(probs[result.target_id]), abs=1e-6)
    start = result.subject_span[0]
    assert bool((result.indirect_effect[:, :start] == 0).all())  # before the subject nothing changed


def test_last_layer_last_token_restores_the_clean_run(traced):
    model = traced("llama")
    result = tracing.causal_trace(model, PROMPT, "Eiffel Tower", " ", progress=False)
    assert result.scores[-1, -1] == pytest.approx(result.p_clean, abs=1e-5)
    assert result.total_effect == pytest.approx(result.p_clean - result.p_corrupt)
    assert result.target == " "


def test_noise_scale_and_samples(traced):
    model = traced("llama")
    a = tracing.causal_trace(model, PROMPT, "Eiffel Tower", samples=4, noise=3.0, seed=1, progress=False)
    assert a.noise_std == pytest.approx(3.0 * float(model.W_E.detach().std()), rel=1e-6)
    b = tracing.causal_trace(model, PROMPT, "Eiffel Tower", samples=4, noise=3.0, seed=1, batch_size=2,
                             progress=False)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
    c = tracing.causal_trace(model, PROMPT, "Eiffel Tower", samples=4, noise=3.0, seed=2, progress=False)
    assert a.p_corrupt != c.p_corrupt


def test_subject_span(traced):
    model = traced("llama")
    tokens = model.to_tokens(PROMPT)
    assert subject_span(model, tokens, "Eiffel Tower") == (5, 17)
    assert subject_span(model, tokens, "Tower") == (12, 17)
    assert subject_span(model, tokens, (3, 6)) == (3, 6)
    with pytest.raises(ValueError, match=r"subject 'Louvre' is not in the prompt; its tokens are \['<bos>', 'T'"):
        subject_span(model, tokens, "Louvre")
    with pytest.raises(ValueError, match="not inside the prompt"):
        subject_span(model, tokens, (3, 99))
    with pytest.raises(ValueError, match="empty"):
        subject_span(model, tokens, "  ")


def test_bad_input(traced):
    llama, mamba = traced("llama"), traced("mamba")
    with pytest.raises(ValueError, match="not in the prompt"):
        tracing.causal_trace(llama, PROMPT, "Colosseum", progress=False)
    with pytest.raises(KeyError, match="site='mlp'.*cannot trace"):
        tracing.causal_trace(mamba, PROMPT, "Eiffel Tower", site="mlp", progress=False)
    with pytest.raises(KeyError, match="site='pattern'"):
        tracing.causal_trace(llama, PROMPT, "Eiffel Tower", site="pattern", progress=False)
    with pytest.raises(ValueError, match="restore must be"):
        tracing.causal_trace(llama, PROMPT, "Eiffel Tower", restore="all", progress=False)
    with pytest.raises(ValueError, match="samples must be an int >= 1"):
        tracing.causal_trace(llama, PROMPT, "Eiffel Tower", samples=0, progress=False)
    with pytest.raises(ValueError, match="noise must be a positive number"):
        tracing.causal_trace(llama, PROMPT, "Eiffel Tower", noise=-1.0, progress=False)
    with pytest.raises(ValueError, match="sever applies to site='resid'"):
        tracing.causal_trace(llama, PROMPT, "Eiffel Tower", site="mlp", sever="attn", progress=False)
    with pytest.raises(ValueError, match="not a single token"):
        tracing.causal_trace(llama, PROMPT, "Eiffel Tower", target=" Paris", progress=False)
    with pytest.raises(ValueError, match="too small for one patched forward"):
        tracing.causal_trace(llama, PROMPT, "Eiffel Tower", memory_budget=10_000, progress=False)


def test_result_report(traced, tmp_path):
    result = tracing.causal_trace(traced("llama"), PROMPT, "Eiffel Tower", restore="span", progress=False)
    assert result.unit_labels()[5].endswith("*") and "Eiffel Tower" in result.unit_labels()[5]
    summary = result.summary()
    assert summary["last_token_peak_ie"] == pytest.approx(float(result.indirect_effect[:, -1].max()))
    import json

    data = json.loads(result.to_json())
    assert data["subject_span"] == [5, 17] and len(data["scores"]) == 2 and data["restore"] == "span"
    page = result.save_html(tmp_path / "trace.html").read_text()
    assert "<script" in page and "<script src" not in page and "Causal trace" in page and "Plotly" in page
    fig = result.plot()
    assert fig.data[0].z.shape == (len(result.units), 2)


def test_average_trace_by_token_category(traced):
    model = traced("llama")
    a = tracing.causal_trace(model, PROMPT, "Eiffel Tower", samples=2, progress=False)
    b = tracing.causal_trace(model, "Big Ben is in London", "Big Ben", samples=2, progress=False)
    cats = tracing.token_categories(a)
    assert cats[:5] == [None] * 5 and cats[5] == "first subject token" and cats[16] == "last subject token"
    assert cats[17] == "first subsequent token" and cats[-1] == "last token" and cats[10] == "middle subject tokens"
    avg = tracing.average_trace([a, b])
    last = avg.categories.index("last token")
    torch.testing.assert_close(avg.effect[last], (a.indirect_effect[:, -1] + b.indirect_effect[:, -1]) / 2)
    mid = avg.categories.index("middle subject tokens")
    torch.testing.assert_close(avg.effect[mid], (a.indirect_effect[:, 6:16].mean(1) + b.indirect_effect[:, 2:7].mean(1))
                               / 2)
    assert avg.mean_total_effect == pytest.approx((a.total_effect + b.total_effect) / 2)
    span = tracing.causal_trace(model, PROMPT, "Eiffel Tower", samples=2, restore="span", progress=False)
    with pytest.raises(ValueError, match="share site, restore mode"):
        tracing.average_trace([a, span])
    assert "subject span" in tracing.average_trace([span]).categories
