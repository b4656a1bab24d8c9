"""Bad inputs to linear probes, ``probe_activations`` (``position=True`` is not index 1) and ``layer_sweep``'s
control task (tests/probes/test_sweep_control.py shows each sweep check fires before any forward pass).

Single-class labels and ``C=inf`` are issue 12's (LinearProbe.fit); they are not in this table."""

import torch

from interp.probes import LinearProbe, layer_sweep, probe_activations

SITE = "blocks.1.hook_resid_post"
X = torch.randn(10, 4)
Y = torch.tensor([0, 1] * 5)
TEXTS = ["ab.", "cd.", "ef.", "gh."]


def _sweep(e, **kwargs):
    return layer_sweep(e.llama, TEXTS, [0, 1, 0, 1], SITE, folds=2, progress=False, **kwargs)


def _probe():
    return LinearProbe.fit(X, Y)


ROWS = [
    ("position-bool", lambda e: probe_activations(e.llama, SITE, e.tokens, position=True), ValueError,
     r"position must be an int index or 'mean'; got True"),
    ("position-float", lambda e: probe_activations(e.llama, SITE, e.tokens, position=1.7), ValueError,
     r"position must be an int index or 'mean'; got 1\.7"),
    ("position-string", lambda e: probe_activations(e.llama, SITE, e.tokens, position="last"), ValueError,
     r"position must be an int index or 'mean'; got 'last'"),
    ("position-range", lambda e: probe_activations(e.llama, SITE, e.tokens, position=6), ValueError,
     r"position 6 is out of range for sequences of length 6"),
    ("batch-size-zero", lambda e: probe_activations(e.llama, SITE, e.tokens, batch_size=0), ValueError,
     r"batch_size must be an int >= 1; got 0"),
    ("batch-size-float", lambda e: probe_activations(e.llama, SITE, e.tokens, batch_size=2.0), TypeError,
     r"batch_size must be an int; got 2\.0"),
    ("site-unknown", lambda e: probe_activations(e.llama, "blocks.1.hook_resid", e.tokens), KeyError,
     r"unknown hook site 'blocks\.1\.hook_resid'"),
    ("tokens-float", lambda e: probe_activations(e.llama, SITE, torch.rand(2, 3)), TypeError,
     r"tokens must hold integer token ids"),
    ("fit-x-1d", lambda e: LinearProbe.fit(torch.randn(10), Y), ValueError, r"X must be a float tensor \[n, d_in\]"),
    ("fit-x-int", lambda e: LinearProbe.fit(torch.ones(10, 4, dtype=torch.long), Y), ValueError,
     r"X must be a float tensor \[n, d_in\]"),
    ("fit-y-float", lambda e: LinearProbe.fit(X, Y.float()), ValueError, r"y must be integer labels \[n\]"),
    ("fit-y-length", lambda e: LinearProbe.fit(X, Y[:5]), ValueError,
     r"y must be integer labels \[n\] matching X's 10 rows"),
    ("fit-y-negative", lambda e: LinearProbe.fit(X, Y - 1), ValueError, r"y must be non-empty labels >= 0"),
    ("fit-x-nan", lambda e: LinearProbe.fit(X * float("nan"), Y), ValueError, r"X holds non-finite values"),
    ("fit-c-zero", lambda e: LinearProbe.fit(X, Y, C=0), ValueError, r"C must be > 0"),
    ("fit-label-range", lambda e: LinearProbe.fit(X, Y * 2, n_classes=2), ValueError,
     r"y holds label 2, outside 0\.\.1 \(n_classes=2\)"),
    ("predict-width", lambda e: _probe().predict(torch.randn(3, 5)), ValueError, r"X must be \[n, 4\]; got \(3, 5\)"),
    ("n-classes", lambda e: LinearProbe(4, 1), ValueError, r"n_classes must be >= 2; got 1"),
    ("sweep-control-unknown", lambda e: _sweep(e, control="random"), ValueError,
     r"control must be one of \('default', 'none'\); got 'random'"),
    ("sweep-control-types-length", lambda e: _sweep(e, control_types=["a", "b"]), ValueError,
     r"control_types has 2 entries but there are 4 texts; give one word type per text"),
    ("sweep-control-types-single", lambda e: _sweep(e, control_types=["a"] * 4), ValueError,
     r"control_types: every text has the same word type \('a'\).*control='none'"),
    ("sweep-control-none-and-types", lambda e: _sweep(e, control="none", control_types=list("abab")), ValueError,
     r"control='none' runs no control task.*pass one or the other"),
    ("sweep-c-zero", lambda e: _sweep(e, C=0), ValueError, r"C must be a positive finite number"),
    ("sweep-family", lambda e: _sweep(e, family="svm"), ValueError, r"family must be one of"),
    ("load-missing", lambda e: LinearProbe.load(e.tmp), FileNotFoundError, r"holds no probe\.json"),
    ("load-json-list", lambda e: LinearProbe.load(_broken(e, "probe.json", "[]")), ValueError,
     r"probe\.json: holds a JSON list; expected a JSON object"),
    ("load-weights-corrupt", lambda e: LinearProbe.load(_broken(e, "probe.safetensors", b"junk")), ValueError,
     r"probe\.safetensors: not a readable safetensors file"),
]


def _broken(e, name, content):
    folder = _probe().save(e.tmp / "probe")
    path = folder / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return folder
