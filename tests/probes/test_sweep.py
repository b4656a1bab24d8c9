"""layer_sweep / sweep_activations: scores equal scikit-learn on the same folds, selectivity separates a
representation of word identity from one of the property, reports, files and bad input."""

import json

import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

import interp
from interp.probes import Activations, Position, layer_sweep, load_probe, sweep_activations


def _acts(X: torch.Tensor, types) -> Activations:
    S, n, _ = X.shape
    names = tuple(f"blocks.{i}.hook_resid_post" for i in range(S))
    return Activations(names, ((names, X),), torch.arange(n), tuple(types), Position.parse("last"), n)


def _words(n=400, n_types=40, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    types = torch.randint(0, n_types, (n,), generator=g)
    label_of = torch.randperm(n_types, generator=g) % 2
    y = label_of[types]
    identity = torch.randn(n_types, d, generator=g)[types] * 2 + 0.3 * torch.randn(n, d, generator=g)
    u = torch.randn(d, generator=g)
    prop = torch.outer(2.0 * y - 1, u / u.norm()) * 2 + torch.randn(n, d, generator=g)
    return torch.stack([identity, prop]), y, types.tolist()


def test_selectivity_separates_identity_from_property():
    """Hewitt & Liang 2019: a representation of word identity fits the control task as well as the task (no
    selectivity); a representation of the property alone cannot fit random per-word labels."""
    X, y, types = _words()
    r = sweep_activations(_acts(X, types), y.tolist(), 5, C=1.0)
    ident, prop = 0, 1
    assert r.accuracy[ident] > 0.95 and r.control[ident] > 0.9 and abs(float(r.selectivity[ident])) < 0.1
    assert r.accuracy[prop] > 0.95 and r.control[prop] < 0.75 and float(r.selectivity[prop]) > 0.25
    assert (r.shuffled < 0.65).all() and 0.4 < r.majority < 0.65


@pytest.mark.parametrize("family", ["logistic", "ridge"])
def test_scores_equal_sklearn_on_the_same_folds(family):
    X, y, types = _words(n=200, d=12, seed=3)
    target = (X[1, :, 0] * 2 + X[0, :, 1]).tolist() if family == "ridge" else y.tolist()
    r = sweep_activations(_acts(X, types), target, 4, family=family, C=0.5, alpha=3.0, tol=1e-8)
    t = torch.tensor(target)
    for s in range(2):
        for f in range(4):
            tr, te = r.fold_of != f, r.fold_of == f
            Xs = X[s].double().numpy()
            ref = (LogisticRegression(C=0.5, max_iter=10_000) if family == "logistic" else Ridge(alpha=3.0))
            ref.fit(Xs[tr.numpy()], t[tr].numpy())
            score = ref.score(Xs[te.numpy()], t[te].numpy())
            assert float(r.accuracy_folds[s, f]) == pytest.approx(score, abs=0.01 if family == "logistic" else 1e-6)


def test_layer_sweep_on_a_model_report_and_files(tiny_dir, tmp_path):
    model = interp.load_model(str(tiny_dir("llama")))
    g = torch.Generator().manual_seed(0)
    texts = ["".join(chr(97 + int(i)) for i in torch.randint(0, 26, (5,), generator=g)) for _ in range(120)]
    labels = ["early" if t[-1] < "n" else "late" for t in texts]
    r = layer_sweep(model, texts, labels, "blocks.*.hook_resid_post", "last", folds=3, C=100.0, progress=False)
    assert r.sites == ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post") and r.classes == ("early", "late")
    assert float(r.accuracy.max()) > 0.9                         # the last letter is in the last residual
    data = json.loads(r.to_json())
    assert {"sites", "accuracy", "control", "majority"} <= set(data) and len(data["control"]) == 2
    assert r.save_html(tmp_path / "r.html").read_text().count("<html") == 1
    assert "selectivity" in r._repr_html_() or r._repr_html_()
    probe = r.probe()
    probe.save(tmp_path / "p")
    again = load_probe(tmp_path / "p")
    assert (again.site, again.position, again.classes) == (r.best(), "last", ["early", "late"])
    X = torch.randn(4, model.d_model)
    torch.testing.assert_close(again(X), probe(X), rtol=0, atol=0)


@pytest.mark.parametrize("family", ["ridge", "mass_mean", "logistic"])
def test_every_family_saves_and_loads_with_normalisation(family, tmp_path):
    X, y, types = _words(n=120, d=8, seed=1)
    target = X[1, :, 0].tolist() if family == "ridge" else y.tolist()
    r = sweep_activations(_acts(X, types), target, 3, family=family, normalize=True)
    probe = r.probe("blocks.1.hook_resid_post")
    assert probe.mean is not None
    probe.save(tmp_path / family)
    again = load_probe(tmp_path / family)
    assert type(again) is type(probe) and again.family == family
    torch.testing.assert_close(again(X[1]), probe(X[1]), rtol=0, atol=0)
    assert sorted(p.name for p in (tmp_path / family).iterdir()) == ["probe.json", "probe.safetensors"]


def test_bad_input(tiny_dir):
    X, y, types = _words(n=60, d=4)
    acts = _acts(X, types)
    with pytest.raises(ValueError, match="labels has 59 entries"):
        sweep_activations(acts, y.tolist()[:-1])
    with pytest.raises(ValueError, match="single class"):
        sweep_activations(acts, ["a"] * 60)
    with pytest.raises(ValueError, match="label 3 is 'x'"):
        sweep_activations(acts, [1.0, 2.0, 3.0, "x"] + [1.0] * 56, family="ridge")
    with pytest.raises(ValueError, match="class 'rare' has 2 text"):
        sweep_activations(acts, ["rare"] * 2 + ["common"] * 58, folds=5)
    with pytest.raises(ValueError, match="same word type"):   # given types; default ones: test_sweep_control.py
        sweep_activations(acts, y.tolist(), control_types=[7] * 60)
    with pytest.raises(ValueError, match="folds must be"):
        sweep_activations(acts, y.tolist(), folds=1)
    model = interp.load_model(str(tiny_dir("llama")))
    with pytest.raises(ValueError, match="labels has 2 entries but there are 3 texts"):
        layer_sweep(model, ["ab", "cd", "ef"], [0, 1], progress=False)
    with pytest.raises(KeyError, match="matches no site"):
        layer_sweep(model, ["ab", "cd", "ef", "gh"], [0, 1, 0, 1], sites="blocks.*.hook_resid_psot", folds=2,
                    progress=False)
    with pytest.raises(ValueError, match="finds no token in 3 text"):
        layer_sweep(model, ["ab", "cd", "ef", "gh"], [0, 1, 0, 1], position="regex:c", folds=2, progress=False)


def test_unconverged_fits_are_reported():
    X, y, types = _words(n=100, d=8, seed=4)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        r = sweep_activations(_acts(X, types), y.tolist(), 3, C=100.0, max_iter=2, tol=1e-12)
    assert r.converged < 1.0 and "converged" in r.to_json()
