"""The logit lens equals a plain per-layer loop (final norm + unembedding on each cached ``resid_pre``) on every model
kind; its answer statistics equal sorting by hand; the result's JSON, figure and page; bad input."""

import json

import pytest
import torch

import interp
from interp import lenses

ARCHS = ["llama", "gpt2", "mamba", "mamba2"]
PROMPT = "The Eiffel Tower is in Paris"


@pytest.fixture(scope="module")
def models(tiny_dir):
    built = {}

    def get(arch):
        if arch not in built:
            built[arch] = interp.load_model(tiny_dir(arch, seed=1, initializer_range=0.2))
        return built[arch]

    return get


def _reference_logits(model, tokens):
    """Plain loop: each block's cached input through ``apply_ln_final`` and ``W_U``, then the model's logits."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        out = [model.apply_ln_final(cache[f"blocks.{layer}.hook_resid_pre"]) @ model.W_U + model.b_U
               for layer in range(model.n_layers)]
    return torch.stack([*out, logits])


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_logits_equal_plain_loop(models, arch):
    model = models(arch)
    tokens = model.to_tokens(PROMPT)
    got, labels = lenses.layer_logits(model, tokens)
    ref = _reference_logits(model, tokens)
    assert labels == [f"{i}_pre" for i in range(model.n_layers)] + ["final_post"]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[-1], model(tokens), atol=1e-5, rtol=1e-5)  # the last layer is the model


@pytest.mark.parametrize("arch", ARCHS)
def test_answer_statistics_equal_sorting_by_hand(models, arch):
    model = models(arch)
    tokens = model.to_tokens(PROMPT)
    ref = _reference_logits(model, tokens)[:, 0]
    for position, answer in [(-1, None), (2, 7), (-3, None)]:
        result = lenses.logit_lens(model, tokens, answer, position=position, top_k=4)
        pos = position % tokens.shape[1]
        want = int(ref[-1, pos].argmax()) if answer is None else answer
        assert result.answer_id == want and result.position == pos
        probs = ref[:, pos].softmax(-1)
        order = probs.argsort(-1, descending=True)
        ranks = [int((order[layer] == want).nonzero()) for layer in range(len(order))]
        assert result.answer_rank.tolist() == ranks
        torch.testing.assert_close(result.answer_prob, probs[:, want], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(result.top_probs, probs.gather(-1, order[:, :4]), atol=1e-6, rtol=1e-5)
        assert result.top_tokens == [[model.tokenizer.decode([i]) for i in row] for row in order[:, :4].tolist()]
        best = ref.softmax(-1).max(-1)
        torch.testing.assert_close(result.best_probs, best.values, atol=1e-6, rtol=1e-5)
        assert result.best_tokens[-1] == [model.tokenizer.decode([i]) for i in best.indices[-1].tolist()]
        assert float(result.final_kl[-1].abs().max()) < 1e-5  # the output layer decodes to itself
        assert bool((result.final_kl[:-1] > 0).any())


def test_answer_as_string_and_prompt_text(models):
    model = models("llama")
    token = model.to_str_tokens(PROMPT)[3]
    by_text = lenses.logit_lens(model, PROMPT, token)
    by_id = lenses.logit_lens(model, model.to_tokens(PROMPT)[0], model.to_single_token(token))
    assert by_text.answer_id == by_id.answer_id
    assert by_text.answer_rank.tolist() == by_id.answer_rank.tolist()
    assert by_text.prompt == PROMPT and by_id.prompt is None


def test_identity_tuned_lens_is_the_logit_lens(models):
    model = models("mamba")
    tokens = model.to_tokens(PROMPT)
    plain = lenses.logit_lens(model, tokens)
    tuned = lenses.logit_lens(model, tokens, lens=lenses.TunedLens.identity(model))
    assert tuned.lens == "tuned" and plain.lens == "logit"
    torch.testing.assert_close(tuned.answer_prob, plain.answer_prob, atol=1e-6, rtol=0)
    assert tuned.best_tokens == plain.best_tokens


def test_result_json_plot_and_page(models, tmp_path):
    model = models("gpt2")
    result = lenses.logit_lens(model, PROMPT, top_k=3)
    d = json.loads(result.to_json())
    n = model.n_layers + 1
    assert d["lens"] == "logit" and len(d["answer_rank"]) == n and len(d["top_tokens"][0]) == 3
    assert len(d["best_tokens"]) == n and len(d["best_tokens"][0]) == len(d["str_tokens"])
    fig = result.plot()
    kinds = [t.type for t in fig.data]
    assert kinds == ["heatmap", "scatter", "scatter"]
    assert list(fig.data[0].y) == result.labels and len(fig.data[0].x) == len(result.str_tokens)
    page = result.save_html(tmp_path / "lens.html").read_text()
    assert "Plotly.newPlot" in page and "P(answer)" in page and "<script src=" not in page
    assert "Plotly.newPlot" in result._repr_html_()
    assert result.first_layer_top() is None or result.answer_rank[result.first_layer_top():].eq(0).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(position=99), "position must be an int"),
    (dict(position=1.5), "position must be an int"),
    (dict(answer=10**7), "outside the vocabulary"),
    (dict(answer=" Paris Paris Paris"), "not a single token"),
    (dict(answer=2.0), "answer must be"),
    (dict(top_k=0), "top_k"),
])
def test_bad_input_names_the_argument(models, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lenses.logit_lens(models("llama"), PROMPT, **kwargs)


def test_bad_prompts(models):
    model = models("llama")
    with pytest.raises(ValueError, match="one prompt"):
        lenses.logit_lens(model, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty string"):
        lenses.logit_lens(model, "")
    with pytest.raises(TypeError, match="prompt_or_tokens"):
        lenses.logit_lens(model, 3.5)


@pytest.mark.integration
def test_smollm2_paris(smollm2):
    result = lenses.logit_lens(smollm2, "The Eiffel Tower is located in the city of", " Paris")
    assert int(result.answer_rank[-1]) == 0 and float(result.answer_prob[-1]) > 0.3
    assert int(result.answer_rank[0]) > 100  # the embedding alone does not predict it
    first = result.first_layer_top()
    assert first is not None and 10 < first < smollm2.n_layers + 1


def test_page_renders_offline(models, tmp_path, chromium):
    from interp.reports.browser import render

    page = lenses.logit_lens(models("mamba2"), PROMPT).save_html(tmp_path / "lens.html")
    shown = render(page, out_dir=tmp_path)
    assert shown.plotly_figures() >= 1 and shown.ink_fraction() > 0.01
