"""Probe families beside :class:`~interp.probes.LinearProbe` (logistic regression): ridge regression for continuous
targets and the difference-of-means ("mass-mean") probe of Marks & Tegmark 2023.

Each is a :class:`~interp.probes.base.Probe` (same read-out, metadata, ``save``/``load``) with a ``fit`` that
solves scikit-learn's objective (``Ridge(alpha)``; ``NearestCentroid``, which the mass-mean read-out equals) through
the batched trainer of :mod:`interp.probes.trainer`, so a single fit and a layer sweep agree exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.probes.base import Probe

__all__ = ["ClassifierProbe", "RidgeProbe", "MassMeanProbe", "check_features", "check_classes", "check_targets"]


def check_features(X, arg: str = "X") -> Tensor:
    if not isinstance(X, Tensor) or X.ndim != 2 or not X.is_floating_point():
        raise ValueError(f"{arg} must be a float tensor [n, d_in]; got "
                         f"{tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__}")
    if not torch.isfinite(X).all():
        raise ValueError(f"{arg} holds non-finite values (nan/inf)")
    return X


def check_classes(X: Tensor, y, n_classes: int | None = None) -> tuple[Tensor, int]:
    """Integer labels ``[n]`` matching ``X``'s rows, at least two classes present; returns ``(y, n_classes)``."""
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be integer labels [n] matching X's {X.shape[0]} rows; got {y.dtype} "
                         f"{tuple(y.shape)}")
    if y.numel() == 0 or int(y.min()) < 0:
        raise ValueError("y must be non-empty labels >= 0")
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if int(y.max()) >= k:
        raise ValueError(f"y holds label {int(y.max())}, outside 0..{k - 1} (n_classes={k})")
    present = torch.unique(y)
    if present.numel() < 2:
        raise ValueError(f"y holds a single class ({int(present[0])}); a classifier needs at least 2 classes "
                         "among its training rows")
    return y.long(), k


def check_targets(X: Tensor, y) -> Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != X.shape[0] or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"y must be numeric targets [n] matching X's {X.shape[0]} rows; got {y.dtype} "
                         f"{tuple(y.shape)}")
    y = y.double()
    if not torch.isfinite(y).all():
        raise ValueError("y holds non-finite targets (nan/inf)")
    return y


class ClassifierProbe(Probe):
    """Class probabilities, predictions and accuracy for the classifying families."""

    @property
    def n_classes(self) -> int:
        return 2 if self.W.shape[1] == 1 else int(self.W.shape[1])

    def predict_proba(self, X: Tensor) -> Tensor:
        """Class probabilities ``[n, n_classes]`` (sigmoid of the one logit for two classes, else softmax)."""
        logits = self(X)
        if self.W.shape[1] == 1:
            p = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p, p], dim=1)
        return logits.softmax(-1)

    def predict(self, X: Tensor) -> Tensor:
        """Most likely class index per row ``[n]``."""
        logits = self(X)
        return (logits[:, 0] > 0).long() if self.W.shape[1] == 1 else logits.argmax(-1)

    def score(self, X: Tensor, y) -> float:
        """Accuracy on ``(X, y)``."""
        X, y = check_features(X), torch.as_tensor(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0] or y.is_floating_point():
            raise ValueError(f"y must be integer labels [n] matching X's {X.shape[0]} rows; got {y.dtype} "
                             f"{tuple(y.shape)}")
        return float((self.predict(X) == y.long()).double().mean())


class RidgeProbe(Probe):
    """Ridge regression ``y ~ x w + b`` for continuous targets (``Ridge(alpha=alpha)``'s objective:
    ``sum_i (y_i - x_i w - b)^2 + alpha ||w||^2``, intercept unpenalised); Hoerl & Kennard 1970."""

    family = "ridge"

    @classmethod
    def fit(cls, X: Tensor, y, *, alpha: float = 1.0, **meta) -> RidgeProbe:
        """Fit on ``X [n, d_in]`` and numeric targets ``y [n]``."""
        from interp.probes.trainer import fit_batched

        X = check_features(X)
        y = check_targets(X, y)
        fit = fit_batched(X[None], y[None], torch.ones(1, X.shape[0], dtype=torch.bool), "ridge", alpha=alpha)
        return cls.from_weights(fit.W[0, 0, 0], fit.b[0, 0, 0], hyper={"alpha": float(alpha)}, **meta)

    @classmethod
    def from_weights(cls, W: Tensor, b: Tensor, **meta) -> RidgeProbe:
        probe = cls.__new__(cls)
        torch.nn.Module.__init__(probe)
        probe._setup(W, b, converged=True, **meta)
        return probe

    def predict(self, X: Tensor) -> Tensor:
        """Predicted targets ``[n]``."""
        return self(X)[:, 0]

    def score(self, X: Tensor, y) -> float:
        """R^2 on ``(X, y)`` (scikit-learn's ``r2_score``)."""
        y = check_targets(check_features(X), y)
        ss_res = (y - self.predict(X)).pow(2).sum()
        ss_tot = (y - y.mean()).pow(2).sum()
        return float(1 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


class MassMeanProbe(ClassifierProbe):
    """The difference-of-means ("mass-mean") probe of Marks & Tegmark 2023, "The Geometry of Truth": direction
    ``theta = mu_1 - mu_0`` and read-out ``theta . (x - (mu_0 + mu_1) / 2)``, i.e. the nearest class mean; with more
    classes, ``logit_c = mu_c . x - |mu_c|^2 / 2`` (scikit-learn's ``NearestCentroid``)."""

    family = "mass_mean"

    @classmethod
    def fit(cls, X: Tensor, y, *, n_classes: int | None = None, **meta) -> MassMeanProbe:
        """Fit on ``X [n, d_in]`` and integer labels ``y [n]``."""
        from interp.probes.trainer import fit_batched

        X = check_features(X)
        y, k = check_classes(X, y, n_classes)
        if bool((torch.bincount(y, minlength=k) == 0).any()):
            raise ValueError(f"y: every class 0..{k - 1} needs at least one row for its mean")
        fit = fit_batched(X[None], y[None], torch.ones(1, X.shape[0], dtype=torch.bool), "mass_mean", n_classes=k)
        return cls.from_weights(fit.W[0, 0, 0], fit.b[0, 0, 0], **meta)

    @classmethod
    def from_weights(cls, W: Tensor, b: Tensor, **meta) -> MassMeanProbe:
        probe = cls.__new__(cls)
        torch.nn.Module.__init__(probe)
        probe._setup(W, b, converged=True, **meta)
        return probe
