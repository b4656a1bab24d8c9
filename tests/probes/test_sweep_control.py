"""The control task when it cannot apply, ``control="none"``, and every argument checked before the forward passes:
a probed token that is the same in every text runs the sweep and reports the control as not applicable; given
control types that cannot make a control task, and every other bad argument, raise before any forward pass."""

import json
import math

import pytest
import torch

import interp
import interp.probes.collect as collect
from interp.probes import Activations, Position, layer_sweep, sweep_activations

EARLY, LATE = "abcdef", "stuvwx"
TEXTS = [f"{a}{b}{c}." for a in EARLY + LATE for b, c in ("pq", "mn")]   # every text ends with "."
LABELS = ["early" if t[0] in EARLY else "late" for t in TEXTS]           # 12 + 12


class ForwardPass(Exception):
    """Raised by the patched forward pass: a check that fires first raises its own error instead."""


@pytest.fixture(scope="module")
def model(tiny_dir):
    return interp.load_model(str(tiny_dir("llama")))


@pytest.fixture
def no_forward(monkeypatch):
    def boom(*args, **kwargs):
        raise ForwardPass("the model ran a forward pass")

    monkeypatch.setattr(collect, "_run_batch", boom)


def _acts(types, n=60, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    X = torch.stack([torch.randn(n, d, generator=g) + y[:, None], torch.randn(n, d, generator=g)])
    names = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    return Activations(names, ((names, X),), torch.arange(n), tuple(types), Position.parse("last"), n), y.tolist()


def test_same_token_in_every_text_runs_and_reports_control_not_applicable(model, tmp_path):
    r = layer_sweep(model, TEXTS, LABELS, position="last", folds=3, progress=False)
    assert not r.has_control and r.control_note.startswith("not applicable (position 'last' reads the same word type")
    assert "control_types=" in r.control_note and "--control-key" in r.control_note and "--control none" in \
        r.control_note
    assert torch.isnan(r.control).all() and torch.isnan(r.selectivity).all()
    assert torch.isfinite(r.accuracy).all() and torch.isfinite(r.shuffled).all() and math.isfinite(r.majority)
    assert r.hyper["control_types"] == "token" and len(r.probes) == 2
    data = json.loads(r.to_json())
    assert data["control"] == [None, None] and data["selectivity"] == [None, None]
    assert data["control_note"] == r.control_note
    shown = "control: not applicable ("
    assert shown in r.save_html(tmp_path / "r.html").read_text()
    assert shown in r._repr_html_()
    fig = r.plot()
    assert shown in fig.layout.title.text and {t.name for t in fig.data} == {
        "accuracy (cross-validated)", "shuffled labels", "majority class"}
    none = layer_sweep(model, TEXTS, LABELS, position="last", folds=3, control="none", progress=False)
    assert none.control_note.startswith("not run") and none.hyper["control_types"] == "none"
    torch.testing.assert_close(none.accuracy, r.accuracy)       # the same folds and shuffles, no control drawn
    torch.testing.assert_close(none.shuffled, r.shuffled)


def test_control_none_and_an_applicable_control():
    acts, y = _acts(range(60))
    with_control = sweep_activations(acts, y, 3)
    assert with_control.has_control and with_control.control_note is None
    assert torch.isfinite(with_control.control).all() and "control: " not in with_control._repr_html_()
    assert {"control task (Hewitt & Liang)", "selectivity"} <= {t.name for t in with_control.plot().data}
    none = sweep_activations(acts, y, 3, control="none")
    assert none.control_note == "not run (control='none'; CLI: --control none)"
    assert torch.isnan(none.control).all() and torch.isnan(none.selectivity).all()
    assert json.loads(none.to_json())["hyper"]["control_types"] == "none"
    torch.testing.assert_close(none.accuracy, with_control.accuracy)
    assert "control: not run" in none._repr_html_()


def test_default_single_type_is_not_applicable_but_given_single_type_raises():
    acts, y = _acts([7] * 60)
    r = sweep_activations(acts, y, 3)
    assert not r.has_control and "token id 7" in r.control_note
    with pytest.raises(ValueError, match=r"control_types: every text has the same word type \('w'\)"):
        sweep_activations(_acts(range(60))[0], y, 3, control_types=["w"] * 60)
    given = sweep_activations(acts, y, 3, control_types=torch.arange(60) % 6)    # a tensor: types by value
    assert given.has_control and given.hyper["control_types"] == "given"


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(control_types=["a", "b"] * 5), ValueError, "control_types has 10 entries but there are 24 texts"),
    (dict(control_types=["w"] * 24), ValueError, "control_types: every text has the same word type"),
    (dict(control_types=[["a"]] * 24), TypeError, r"control_types: entry 0 \(\['a'\], list\) is not a word type"),
    (dict(control_types="ab" * 12), TypeError, "control_types must be a sequence of one word type per text"),
    (dict(control_types=[t[0] for t in TEXTS], control="none"), ValueError, "pass one or the other"),
    (dict(control="random"), ValueError, r"control must be one of \('default', 'none'\)"),
    (dict(family="svm"), ValueError, "family must be one of"),
    (dict(folds=1), ValueError, "folds must be an int >= 2; got 1"),
    (dict(folds=2.0), TypeError, "folds must be an int"),
    (dict(folds=13), ValueError, "class 'early' has 12 text"),
    (dict(folds=25), ValueError, "folds=25 exceeds the 24 texts"),
    (dict(C=0.0), ValueError, "C must be a positive finite number"),
    (dict(C=float("inf")), ValueError, "C must be a positive finite number"),
    (dict(C="1"), TypeError, "C must be a positive finite number .*; got str '1'"),
    (dict(family="ridge", alpha=-1.0, labels=[float(i) for i in range(24)]), ValueError,
     "alpha must be a positive finite number"),
    (dict(family="ridge", labels=LABELS), ValueError, "numeric targets"),
    (dict(shuffles=-1), ValueError, "shuffles must be an int >= 0"),
    (dict(seed="0"), TypeError, "seed must be an int"),
    (dict(max_iter=0), ValueError, "max_iter must be an int >= 1"),
    (dict(tol=0.0), ValueError, "tol must be a positive finite number"),
    (dict(normalize="yes"), TypeError, "normalize must be True or False"),
    (dict(keep_probes=None), TypeError, "keep_probes must be True or False"),
    (dict(labels=LABELS[:-1]), ValueError, "labels has 23 entries but there are 24 texts"),
    (dict(labels=["early"] * 24), ValueError, "single class"),
    (dict(labels=iter(LABELS)), TypeError, "labels must be a sequence"),
    (dict(texts="abc", labels=["a", "b", "a"]), TypeError, "texts must be a non-empty list"),
    (dict(texts=TEXTS[:2], labels=[1.0, 2.0], family="ridge", folds=2), ValueError,
     r"leaves 1 text\(s\) to train on"),
    (dict(sites="blocks.*.hook_resid_psot"), KeyError, "matches no site"),
    (dict(position="middle"), ValueError, "is not a rule"),
    (dict(position="regex:zzz"), ValueError, "finds no token in 24 text"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
    (dict(memory_budget="lots"), ValueError, "memory_budget=.lots. is not a memory size"),
])
def test_bad_arguments_raise_before_any_forward_pass(model, no_forward, kwargs, error, pattern):
    kwargs = {"texts": TEXTS, "labels": LABELS, "folds": 3, **kwargs}
    with pytest.raises(error, match=pattern):
        layer_sweep(model, kwargs.pop("texts"), kwargs.pop("labels"), progress=False, **kwargs)


def test_good_arguments_reach_the_forward_pass(model, no_forward):
    with pytest.raises(ForwardPass):
        layer_sweep(model, TEXTS, LABELS, folds=3, control_types=[t[0] for t in TEXTS], progress=False)
