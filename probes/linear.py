"""``LinearProbe``: L2-regularised logistic regression on activations, fitted in float64 with L-BFGS.

Objective (scikit-learn's ``LogisticRegression(C=C)`` with the lbfgs solver, which the tests compare against):

    minimise  0.5 * ||W||^2 + C * sum_i loss(x_i W + b, y_i)

over W (penalised) and b (not penalised); ``loss`` is the binary log-loss on one logit for two classes and the
softmax cross-entropy over ``n_classes`` logits otherwise. The problem is strictly convex in W, so any solver that
converges finds the same W. Probe inputs come from :func:`probe_activations` (one row per sequence at a chosen
position, or the mean over positions) at any site of any hooked model (transformer or Mamba).
"""

from __future__ import annotations

import json
import operator
from pathlib import Path

import torch
from torch import Tensor, nn

from interp.atomic import atomic_dir
from interp.files import load_safetensors, read_json_object

__all__ = ["LinearProbe", "probe_activations"]


def probe_activations(model, site: str, tokens: Tensor, *, position: int | str = -1, batch_size: int = 16) -> Tensor:
    """Activations at ``site`` for ``tokens [n, pos]`` as ``[n, d]``: at ``position`` (an index, default the last
    token) or averaged over positions (``position="mean"``). The forward pass stops after the site's layer."""
    from tqdm.auto import tqdm

    from interp.checks import check_int, is_index
    from interp.saes.store import site_activations

    tokens = model.check_tokens(tokens, arg="tokens")
    check_int(batch_size, "batch_size", lo=1)
    if not (isinstance(position, str) and position == "mean" or is_index(position)):
        raise ValueError(f"position must be an int index or 'mean'; got {position!r}")
    if not isinstance(position, str):
        position = operator.index(position)
        if not -tokens.shape[1] <= position < tokens.shape[1]:
            raise ValueError(f"position {position} is out of range for sequences of length {tokens.shape[1]}")
    rows = []
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc=f"activations at {site}",
                      disable=tokens.shape[0] <= batch_size):
        act = site_activations(model, site, tokens[start: start + batch_size])
        # a copy of the one position, so that the batch's full [b, pos, d] activations (for a recurrent-state site,
        # a large buffer) are freed before the next batch
        rows.append(act.mean(1) if position == "mean" else act[:, position].clone())
    return torch.cat(rows)


class LinearProbe(nn.Module):
    """A fitted linear classifier: ``logits = x @ W + b`` (``W [d_in, 1]`` for two classes, else
    ``[d_in, n_classes]``). Build it with :meth:`fit`; :meth:`save` / :meth:`load` use safetensors + JSON."""

    def __init__(self, d_in: int, n_classes: int, C: float = 1.0) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; got {n_classes}")
        out = 1 if n_classes == 2 else n_classes
        self.d_in, self.n_classes, self.C = d_in, n_classes, float(C)
        self.W = nn.Parameter(torch.zeros(d_in, out, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(out, dtype=torch.float64))
        self.converged: bool | None = None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, X: Tensor, y: Tensor, *, C: float = 1.0, n_classes: int | None = None, max_iter: int = 1000,
            tol: float = 1e-10) -> LinearProbe:
        """Fit on ``X [n, d_in]`` (float) and integer labels ``y [n]`` in ``0..n_classes-1``."""
        X, y = _check_xy(X, y)
        k = int(y.max()) + 1 if n_classes is None else n_classes
        if int(y.max()) >= k:
            raise ValueError(f"y holds label {int(y.max())}, outside 0..{k - 1} (n_classes={k})")
        if not C > 0:
            raise ValueError(f"C must be > 0 (inverse regularisation strength); got {C}")
        probe = cls(X.shape[1], k, C)
        X64 = X.double()
        opt = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=max_iter, tolerance_grad=tol,
                                tolerance_change=tol * 1e-3, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = probe._objective(X64, y)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            grad_norm = max(float(p.grad.abs().max()) for p in probe.parameters())
        probe.converged = grad_norm <= max(tol, 1e-6) * max(1.0, C * X.shape[0])
        return probe.requires_grad_(False)

    def _objective(self, X: Tensor, y: Tensor) -> Tensor:
        logits = X @ self.W + self.b
        if self.n_classes == 2:
            data = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.double(), reduction="sum")
        else:
            data = nn.functional.cross_entropy(logits, y, reduction="sum")
        return 0.5 * self.W.pow(2).sum() + self.C * data

    # ------------------------------------------------------------------ prediction
    def forward(self, X: Tensor) -> Tensor:
        """Logits ``[n, 1]`` (two classes) or ``[n, n_classes]``."""
        if X.ndim != 2 or X.shape[1] != self.d_in:
            raise ValueError(f"X must be [n, {self.d_in}]; got {tuple(X.shape)}")
        return X.double() @ self.W + self.b

    def predict_proba(self, X: Tensor) -> Tensor:
        """Class probabilities ``[n, n_classes]``."""
        logits = self(X)
        if self.n_classes == 2:
            p = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p, p], dim=1)
        return logits.softmax(-1)

    def predict(self, X: Tensor) -> Tensor:
        """Most likely class per row ``[n]``."""
        return self.predict_proba(X).argmax(-1)

    def score(self, X: Tensor, y: Tensor) -> float:
        """Accuracy on ``(X, y)``."""
        X, y = _check_xy(X, y)
        return float((self.predict(X) == y).double().mean())

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Write ``probe.safetensors`` and ``probe.json`` into ``folder`` (atomically)."""
        from safetensors.torch import save_file

        with atomic_dir(folder) as tmp:
            save_file({"W": self.W.detach().contiguous(), "b": self.b.detach().contiguous()},
                      str(tmp / "probe.safetensors"))
            meta = {"d_in": self.d_in, "n_classes": self.n_classes, "C": self.C, "converged": self.converged}
            (tmp / "probe.json").write_text(json.dumps(meta, indent=1))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> LinearProbe:
        """Read a folder written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / "probe.json").is_file():
            raise FileNotFoundError(f"folder: {folder} holds no probe.json (write it with LinearProbe.save)")
        meta = read_json_object(folder / "probe.json", "a probe's metadata")
        try:
            probe = cls(int(meta["d_in"]), int(meta["n_classes"]), float(meta["C"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{folder / 'probe.json'}: expected d_in, n_classes and C ({type(err).__name__}: "
                             f"{err})") from None
        probe.load_state_dict(load_safetensors(folder / "probe.safetensors"))
        probe.converged = meta.get("converged")
        return probe.requires_grad_(False)


def _check_xy(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(X, Tensor) or X.ndim != 2 or not X.is_floating_point():
        raise ValueError(f"X must be a float tensor [n, d_in]; got "
                         f"{tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__}")
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.is_floating_point() or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be integer labels [n] matching X's {X.shape[0]} rows; got {y.dtype} "
                         f"{tuple(y.shape)}")
    if y.numel() == 0 or int(y.min()) < 0:
        raise ValueError("y must be non-empty labels >= 0")
    if not torch.isfinite(X).all():
        raise ValueError("X holds non-finite values (nan/inf)")
    return X, y.long()
