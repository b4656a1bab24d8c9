"""LinearProbe against scikit-learn's LogisticRegression (same C), on a tiny model's site, files and bad input."""

import pytest
import torch
from sklearn.linear_model import LogisticRegression

import interp
from interp.probes import LinearProbe, probe_activations


def _data(n: int, d: int, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 1.5
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("C", [0.05, 1.0])
def test_matches_sklearn(k, C):
    X, y = _data(300, 7, k, seed=k)
    probe = LinearProbe.fit(X, y, C=C)
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X.double().numpy(), y.numpy())
    assert probe.converged
    W = probe.W.T.numpy()
    torch.testing.assert_close(torch.tensor(W), torch.tensor(ref.coef_), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probe.predict_proba(X), torch.tensor(ref.predict_proba(X.double().numpy())),
                               rtol=1e-4, atol=1e-6)
    assert probe.score(X, y) == pytest.approx(ref.score(X.numpy(), y.numpy()))


def test_probe_on_a_model_site_and_files(tiny_dir, tmp_path):
    model = interp.load_model(str(tiny_dir("llama")))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 100, (160, 6), generator=g)
    y = (tokens[:, -1] >= 52).long()  # is the last token in the upper half of the ids used
    X = probe_activations(model, "blocks.1.hook_resid_post", tokens)
    assert X.shape == (160, model.d_model)
    _, cache = model.run_with_cache(tokens[:3], names_filter=["blocks.1.hook_resid_post"])
    torch.testing.assert_close(X[:3], cache["blocks.1.hook_resid_post"][:, -1])
    probe = LinearProbe.fit(X[:120], y[:120], C=1e4)  # activations are ~0.03 in size: weak penalty
    assert probe.score(X[:120], y[:120]) == 1.0
    mean = probe_activations(model, "blocks.1.hook_resid_post", tokens[:3], position="mean")
    torch.testing.assert_close(mean, cache["blocks.1.hook_resid_post"].mean(1))
    probe.save(tmp_path / "p")
    again = LinearProbe.load(tmp_path / "p")
    torch.testing.assert_close(again.predict_proba(X), probe.predict_proba(X), rtol=0, atol=0)


def test_probe_on_a_mamba_recurrent_state(tiny_dir):
    """Any site works, a Mamba's per-step state included (flattened to d_inner * d_state features)."""
    model = interp.load_model(str(tiny_dir("mamba")))
    site = "blocks.1.mixer.hook_ssm_state"
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, 100, (120, 5), generator=g)
    y = (tokens[:, -1] >= 52).long()
    X = probe_activations(model, site, tokens, batch_size=32)
    assert X.shape == (120, model.d_inner * model.d_state)
    assert X.untyped_storage().nbytes() == X.numel() * X.element_size()  # no view into a states buffer
    _, cache = model.run_with_cache(tokens[:3], names_filter=[site])
    torch.testing.assert_close(X[:3], cache[site][:, -1].flatten(1))
    probe = LinearProbe.fit(X[:90], y[:90], C=1e4)  # plumbing: 1024 features fit 90 rows (a random-init model's
    assert probe.score(X[:90], y[:90]) == 1.0        # states are tiny and noisy; held out it scores ~0.75)


def test_bad_input(tiny_dir):
    X, y = _data(20, 4, 2, seed=0)
    with pytest.raises(ValueError, match="y must be integer labels"):
        LinearProbe.fit(X, y[:-1])
    with pytest.raises(ValueError, match="y must be integer labels"):
        LinearProbe.fit(X, y.double())
    with pytest.raises(ValueError, match="X must be a float tensor"):
        LinearProbe.fit(X.long(), y)
    with pytest.raises(ValueError, match="C must be > 0"):
        LinearProbe.fit(X, y, C=0)
    with pytest.raises(ValueError, match="C must be > 0 and finite"):  # no penalty: no minimiser when separable
        LinearProbe.fit(X, y, C=float("inf"))
    with pytest.raises(ValueError, match="C must be > 0 and finite"):
        LinearProbe.fit(X, y, C=float("nan"))
    with pytest.raises(ValueError, match="single class"):
        LinearProbe.fit(X, torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match="single class"):
        LinearProbe.fit(X, torch.ones(20, dtype=torch.long), n_classes=3)
    with pytest.raises(ValueError, match="outside 0..1"):
        LinearProbe.fit(X, y + 1, n_classes=2)
    with pytest.raises(ValueError, match=r"X must be \[n, 4\]"):
        LinearProbe.fit(X, y).predict(X[:, :3])
    with pytest.raises(ValueError, match="non-finite"):
        LinearProbe.fit(X.masked_fill(X > 1, float("nan")), y)
    with pytest.raises(FileNotFoundError, match="holds no probe.json"):
        LinearProbe.load(tiny_dir("llama"))
    model = interp.load_model(str(tiny_dir("llama")))
    with pytest.raises(KeyError, match="unknown hook site"):
        probe_activations(model, "blocks.1.hook_resid_postt", torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="position 5 is out of range"):
        probe_activations(model, "blocks.1.hook_resid_post", torch.ones(2, 3, dtype=torch.long), position=5)


def test_files_written_before_families_still_load(tmp_path):
    """A folder from the first LinearProbe (no "family" key, C at the top level) reads back as logistic."""
    import json

    from safetensors.torch import save_file

    X, y = _data(50, 3, 2, seed=3)
    probe = LinearProbe.fit(X, y, C=0.3)
    (tmp_path / "old").mkdir()
    save_file({"W": probe.W.contiguous(), "b": probe.b.contiguous()}, str(tmp_path / "old" / "probe.safetensors"))
    (tmp_path / "old" / "probe.json").write_text(json.dumps({"d_in": 3, "n_classes": 2, "C": 0.3, "converged": True}))
    again = LinearProbe.load(tmp_path / "old")
    assert again.C == 0.3 and again.n_classes == 2
    torch.testing.assert_close(again.predict_proba(X), probe.predict_proba(X), rtol=0, atol=0)
