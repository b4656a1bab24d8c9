"""``LinearProbe``: L2-regularised logistic regression on activations, fitted in float64 with L-BFGS.

Objective (scikit-learn's ``LogisticRegression(C=C)`` with the lbfgs solver, which the tests compare against):

    minimise  0.5 * ||W||^2 + C * sum_i loss(x_i W + b, y_i)

over W (penalised) and b (not penalised); ``loss`` is the binary log-loss on one logit for two classes and the
softmax cross-entropy over ``n_classes`` logits otherwise (Alain & Bengio 2016, "Understanding intermediate layers
using linear classifier probes"). The problem is strictly convex in W for finite ``C > 0``, so any solver that
converges finds the same W; ``C = inf`` (no penalty) has no minimiser on separable data and is refused, as is a
training set holding one class. Probe inputs come from :func:`probe_activations` (one row per sequence at a chosen
position, or the mean over positions) or :func:`~interp.probes.collect_activations` (many sites in one pass).
"""

from __future__ import annotations

import math
import operator
from pathlib import Path

import torch
from torch import Tensor, nn

from interp.probes.families import ClassifierProbe, check_classes, check_features

__all__ = ["LinearProbe", "probe_activations"]


def probe_activations(model, site: str, tokens: Tensor, *, position: int | str = -1, batch_size: int = 16) -> Tensor:
    """Activations at ``site`` for ``tokens [n, pos]`` as ``[n, d]``: at ``position`` (an index, default the last
    token) or averaged over positions (``position="mean"``). The forward pass stops after the site's layer.
    (:func:`~interp.probes.collect_activations` reads many sites at once and knows padded texts.)"""
    from interp.checks import check_int, is_index
    from interp.probes.collect import collect_activations

    tokens = model.check_tokens(tokens, arg="tokens")
    check_int(batch_size, "batch_size", lo=1)
    if not (isinstance(position, str) and position == "mean" or is_index(position)):
        raise ValueError(f"position must be an int index or 'mean'; got {position!r}")
    if not isinstance(position, str):
        position = operator.index(position)
    if isinstance(position, int) and not -tokens.shape[1] <= position < tokens.shape[1]:
        raise ValueError(f"position {position} is out of range for sequences of length {tokens.shape[1]}")
    acts = collect_activations(model, tokens, [site], position, batch_size=batch_size,
                               progress=tokens.shape[0] > batch_size)
    return acts[model.check_site(site)]


class LinearProbe(ClassifierProbe):
    """A fitted linear classifier: ``logits = x @ W + b`` (``W [d_in, 1]`` for two classes, else
    ``[d_in, n_classes]``). Build it with :meth:`fit`; :meth:`save` / :meth:`load` use safetensors + JSON."""

    family = "logistic"

    def __init__(self, d_in: int, n_classes: int, C: float = 1.0, **meta) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; got {n_classes}")
        out = 1 if n_classes == 2 else n_classes
        self._setup(torch.zeros(d_in, out), torch.zeros(out), hyper={"C": float(C)}, **meta)

    @property
    def C(self) -> float:
        return float(self.hyper.get("C", 1.0))

    @classmethod
    def from_weights(cls, W: Tensor, b: Tensor, *, C: float, converged: bool | None = None, **meta) -> LinearProbe:
        """A probe with given weights ``W [d_in, 1 | n_classes]`` and intercepts ``b``."""
        probe = cls(W.shape[0], 2 if W.shape[1] == 1 else W.shape[1], C, **meta)
        probe.W.data.copy_(W)
        probe.b.data.copy_(b)
        probe.converged = converged
        return probe

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, X: Tensor, y: Tensor, *, C: float = 1.0, n_classes: int | None = None, max_iter: int = 1000,
            tol: float = 1e-10, **meta) -> LinearProbe:
        """Fit on ``X [n, d_in]`` (float) and integer labels ``y [n]`` in ``0..n_classes-1`` (at least two classes
        present). ``C`` must be finite and > 0."""
        X = check_features(X)
        y, k = check_classes(X, y, n_classes)
        if not (C > 0 and math.isfinite(C)):
            raise ValueError(f"C must be > 0 and finite (inverse regularisation strength); got {C}: without a penalty "
                             "the log-loss has no minimiser on separable data and the weights grow without bound")
        probe = cls(X.shape[1], k, C, **meta)
        probe.requires_grad_(True)
        X64 = X.double()
        opt = torch.optim.LBFGS([probe.W, probe.b], lr=1, max_iter=max_iter, tolerance_grad=tol,
                                tolerance_change=tol * 1e-3, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = probe._objective(X64, y)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            grad_norm = max(float(p.grad.abs().max()) for p in (probe.W, probe.b))
            finite = bool(torch.isfinite(probe.W).all() and torch.isfinite(probe.b).all())
        if not finite:
            raise FloatingPointError("LinearProbe.fit: the weights became non-finite; scale the features down or "
                                     "lower C")
        probe.converged = grad_norm <= max(tol, 1e-6) * max(1.0, C * X.shape[0])
        return probe.requires_grad_(False)

    def _objective(self, X: Tensor, y: Tensor) -> Tensor:
        logits = X @ self.W + self.b
        if self.W.shape[1] == 1:
            data = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.double(), reduction="sum")
        else:
            data = nn.functional.cross_entropy(logits, y, reduction="sum")
        return 0.5 * self.W.pow(2).sum() + self.C * data

    @classmethod
    def load(cls, folder: str | Path) -> LinearProbe:
        """Read a folder written by :meth:`save`."""
        return super().load(folder)
