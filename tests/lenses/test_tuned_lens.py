"""The tuned lens: translators equal their plain formula; the training gradient equals a hand-written KL's; the first
Adam step equals its closed form; training lowers held-out KL (zoo Mamba: every layer); save/load is bit-exact and
refuses another model; an interrupted run resumes to the uninterrupted result."""

import json
import random

import pytest
import torch

import interp
from interp import lenses
from interp.lenses import training


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return interp.load_model(tiny_dir("llama", seed=1, initializer_range=0.2))


@pytest.fixture(scope="module")
def data(llama):
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, llama.d_vocab, (12, 10), generator=g)


def _random_lens(model, scale=0.05):
    lens = lenses.TunedLens.identity(model)
    with torch.no_grad():
        lens.weight.normal_(0, scale)
        lens.bias.normal_(0, scale)
    return lens


@pytest.mark.parametrize("arch", ["llama", "mamba2"])
def test_translate_stack_equals_per_layer_formula(tiny_dir, arch):
    model = interp.load_model(tiny_dir(arch))
    lens = _random_lens(model)
    stack = torch.randn(model.n_layers + 1, 2, 5, model.d_model)
    got = lens.translate_stack(stack)
    eye = torch.eye(model.d_model)
    for layer in range(model.n_layers):
        want = stack[layer] @ (eye + lens.weight[layer]).T + lens.bias[layer]  # A_l h + b_l
        torch.testing.assert_close(got[layer], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lens.translate(stack[layer], layer), want, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[-1], stack[-1])  # the output layer has no translator
    tokens = torch.randint(0, model.d_vocab, (1, 6))
    logits = lens.apply(model, tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        h = cache["blocks.1.hook_resid_pre"]
        ref = model.apply_ln_final(h @ (eye + lens.weight[1]).T + lens.bias[1]) @ model.W_U + model.b_U
    torch.testing.assert_close(logits[1], ref, atol=1e-5, rtol=1e-5)


def test_gradient_equals_hand_written_kl(llama, data):
    lens = _random_lens(llama)
    rows = data[:3]
    layer_losses = training._step_grads(llama, lens, rows)
    with torch.no_grad():
        logits, cache = llama.run_with_cache(rows)
    p = logits.double().softmax(-1)
    eye = torch.eye(llama.d_model, dtype=torch.float64)
    for layer in range(llama.n_layers):
        w = lens.weight[layer].detach().double().requires_grad_(True)
        b = lens.bias[layer].detach().double().requires_grad_(True)
        h = cache[f"blocks.{layer}.hook_resid_pre"].double()
        z = llama.apply_ln_final((h @ (eye + w).T + b).float()).double()  # A_l h + b_l through the final norm
        q = (z @ llama.W_U.double() + llama.b_U.double()).softmax(-1)
        kl = (p * (p.log() - q.log())).sum(-1).mean()  # KL(final || lens), averaged over tokens
        gw, gb = torch.autograd.grad(kl, [w, b])
        assert float(layer_losses[layer]) == pytest.approx(float(kl.detach()), rel=1e-4, abs=1e-6)
        torch.testing.assert_close(lens.weight.grad[layer].double(), gw, atol=1e-6, rtol=1e-3)
        torch.testing.assert_close(lens.bias.grad[layer].double(), gb, atol=1e-6, rtol=1e-3)
    assert all(p.grad is None for p in llama.parameters())  # the model's own gradients are untouched


def test_first_step_is_adams_closed_form(llama, data):
    lr = 1e-3
    cfg = lenses.TrainConfig(steps=1, batch_size=3, lr=lr, heldout=0.25, seed=5)
    trained = lenses.TunedLens.train(llama, data, cfg, progress=False)
    train_rows, held = training.split_tokens(data, 0.25, 5)
    rows = training._batch(train_rows, 0, 3, 5)
    ref = lenses.TunedLens.identity(llama)
    training._step_grads(llama, ref, rows)
    # Adam's first step from zero: m_hat = g, v_hat = g^2, so the update is -lr * g / (|g| + eps)
    for got, g in [(trained.weight, ref.weight.grad), (trained.bias, ref.bias.grad)]:
        torch.testing.assert_close(got.detach(), -lr * g / (g.abs() + 1e-8), atol=1e-9, rtol=1e-5)
    assert trained.heldout.tokens == held.numel() == 3 * 10
    assert trained.training_info["train_tokens"] == 30 and trained.training_info["steps"] == 1


def test_split_is_disjoint_and_seeded(data):
    a, b = training.split_tokens(data, 0.25, 0)
    assert a.shape[0] + b.shape[0] == data.shape[0] and b.shape[0] == 3
    rows = {tuple(r) for r in a.tolist()} | {tuple(r) for r in b.tolist()}
    assert rows == {tuple(r) for r in data.tolist()}
    assert torch.equal(training.split_tokens(data, 0.25, 0)[1], b)
    assert not torch.equal(training.split_tokens(data, 0.25, 1)[1], b)


def test_evaluate_equals_plain_mean_kl(llama, data):
    lens = _random_lens(llama, 0.02)
    ev = lenses.evaluate_lenses(llama, data[:5], lens, batch_size=2, progress=False)
    plain, _ = lenses.layer_logits(llama, data[:5])
    tuned, _ = lenses.layer_logits(llama, data[:5], lens)
    p = plain[-1].double().log_softmax(-1)
    for i in range(llama.n_layers + 1):
        for got, logits in [(ev.logit_kl[i], plain[i]), (ev.tuned_kl[i], tuned[i])]:
            q = logits.double().log_softmax(-1)
            assert float(got) == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), rel=1e-4, abs=1e-6)
    assert ev.tokens == 50 and float(ev.logit_kl[-1]) < 1e-6
    again = lenses.LensEval.from_dict(json.loads(ev.to_json()))
    assert again.labels == ev.labels and torch.allclose(again.tuned_kl, ev.tuned_kl)
    assert [t.name for t in ev.plot().data] == ["logit lens", "tuned lens"]


def test_zoo_mamba_tuned_beats_logit_at_every_layer(tmp_path):
    from interp import zoo
    from interp.saes.tokens import pack_texts
    from interp.zoo.corpus import train_sequence

    model = zoo.load("mamba1-facts")
    rng = random.Random(0)
    texts = [train_sequence(rng, zoo.fact_table("mamba1-facts"), 40) for _ in range(160)]
    tokens = pack_texts(texts, model.tokenizer, 32)
    lens = lenses.TunedLens.train(model, tokens, steps=40, batch_size=8, lr=3e-3, heldout=0.2, progress=False)
    h = lens.heldout
    assert all(h.tuned_wins()), (h.logit_kl.tolist(), h.tuned_kl.tolist())
    page = h.save_html(tmp_path / "kl.html").read_text()
    assert "Plotly.newPlot" in page and "tuned lens" in page
    result = lenses.logit_lens(model, zoo.facts("mamba1-facts")[0].tokens, lens=lens)
    assert result.lens == "tuned" and len(result.labels) == model.n_layers + 1


def test_save_load_round_trip_is_bit_exact(llama, data, tmp_path):
    lens = lenses.TunedLens.train(llama, data, steps=2, batch_size=2, heldout=0.25, progress=False)
    lens.save(tmp_path / "lens")
    again = lenses.TunedLens.load(tmp_path / "lens", llama)
    assert torch.equal(again.weight, lens.weight) and torch.equal(again.bias, lens.bias)
    assert again.model_info == lens.model_info and again.training_info["steps"] == 2
    assert again.heldout.to_dict() == lens.heldout.to_dict()
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == ["lens.json", "lens.safetensors"]
    meta = json.loads((tmp_path / "lens" / "lens.json").read_text())
    assert meta["model"]["n_layers"] == llama.n_layers
    assert meta["shapes"]["weight"] == [llama.n_layers, llama.d_model, llama.d_model]


def test_load_refuses_another_model(llama, tiny_dir, tmp_path):
    lenses.TunedLens.identity(llama).save(tmp_path / "lens")
    same_shapes = interp.load_model(tiny_dir("llama", seed=7, initializer_range=0.2))
    with pytest.raises(ValueError, match="fingerprint"):
        lenses.TunedLens.load(tmp_path / "lens", same_shapes)
    other = interp.load_model(tiny_dir("mamba"))
    with pytest.raises(ValueError, match="trained for|made for"):
        lenses.TunedLens.load(tmp_path / "lens", other)
    with pytest.raises(ValueError, match="made for|trained for"):
        lenses.logit_lens(same_shapes, "a b c", lens=lenses.TunedLens.load(tmp_path / "lens"))


def test_load_checks_files(llama, tmp_path):
    with pytest.raises(FileNotFoundError, match="tuned-lens folder"):
        lenses.TunedLens.load(tmp_path / "nothing")
    lenses.TunedLens.identity(llama).save(tmp_path / "lens")
    (tmp_path / "lens" / "lens.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        lenses.TunedLens.load(tmp_path / "lens")
    lenses.TunedLens.identity(llama).save(tmp_path / "lens")
    meta = json.loads((tmp_path / "lens" / "lens.json").read_text())
    meta["shapes"]["weight"] = [9, 9, 9]
    (tmp_path / "lens" / "lens.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not match"):
        lenses.TunedLens.load(tmp_path / "lens")


def test_failed_save_leaves_the_old_lens(llama, tmp_path, monkeypatch):
    old = _random_lens(llama)
    old.save(tmp_path / "lens")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("interp.lenses.tuned.atomic_write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        lenses.TunedLens.identity(llama).save(tmp_path / "lens")
    assert [p.name for p in tmp_path.iterdir()] == ["lens"]  # no half-written folder beside it
    assert torch.equal(lenses.TunedLens.load(tmp_path / "lens", llama).weight, old.weight)


def test_interrupted_run_resumes_to_the_uninterrupted_result(llama, data, tmp_path, monkeypatch):
    cfg = lenses.TrainConfig(steps=5, batch_size=2, lr=1e-2, heldout=0.25, checkpoint_every=1)
    straight = lenses.TunedLens.train(llama, data, cfg, progress=False)
    real, calls = training._step_grads, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as Ctrl-C during step 4
        return real(*args)

    monkeypatch.setattr(training, "_step_grads", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lenses.TunedLens.train(llama, data, cfg, checkpoint=tmp_path / "ckpt", progress=False)
    monkeypatch.setattr(training, "_step_grads", real)
    assert json.loads((tmp_path / "ckpt" / "progress.json").read_text())["step"] == 3
    resumed = lenses.TunedLens.train(llama, data, cfg, checkpoint=tmp_path / "ckpt", progress=False)
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)
    assert resumed.training_info["steps"] == 5
    other = lenses.TrainConfig(steps=5, batch_size=2, lr=2e-2, heldout=0.25, checkpoint_every=1)
    with pytest.raises(ValueError, match="another configuration"):
        lenses.TunedLens.train(llama, data, other, checkpoint=tmp_path / "ckpt", progress=False)


@pytest.mark.parametrize("kwargs,match", [(dict(steps=0), "steps"), (dict(lr=-1.0), "lr"),
                                          (dict(heldout=1.0), "heldout"), (dict(batch_size=0), "batch_size")])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lenses.TrainConfig(**kwargs)


def test_bad_tokens(llama):
    with pytest.raises(ValueError, match="tokens must be integer ids"):
        lenses.TunedLens.train(llama, torch.zeros(3), steps=1, progress=False)
    with pytest.raises(ValueError, match="tokens must be ids"):
        lenses.evaluate_lenses(llama, torch.zeros(0, 3, dtype=torch.long))
