"""One batched fit for many probes: sites stacked on a leading axis, folds and label sets as extra columns.

Inputs: features ``X [site, row, d]``, label sets ``Y [L, row]`` (the real labels, a control task, shuffled
labels, ...) and training masks ``train [F, row]`` (cross-validation folds, and the all-rows fit). Every
``(site, fold, label set)`` is its own problem; they share each site's rows, so one matrix product per site serves
all of them. Results come back in the original feature coordinates: ``W [site, F, L, d, k]``, ``b [site, F, L, k]``
(``k = 1`` for two classes and for ridge, else the number of classes).

Families and the objectives they solve, each the one scikit-learn solves so that the tests can compare:

- ``logistic`` (``LogisticRegression(C=C)``; Alain & Bengio 2016 use it as the linear classifier probe): minimise
  ``mean_i loss(x_i W + b, y_i) + ||W||^2 / (2 C n_train)``, binary log-loss on one logit for two classes, softmax
  cross-entropy over ``n_classes`` logits otherwise; ``b`` is not penalised.
- ``ridge`` (``Ridge(alpha=alpha)``, continuous targets): minimise ``sum_i (y_i - x_i w - b)^2 + alpha ||w||^2``.
- ``mass_mean`` (Marks & Tegmark 2023, "The Geometry of Truth"): the difference of the class means
  ``theta = mu_1 - mu_0``, read out as ``theta . (x - (mu_0 + mu_1) / 2)``, which classifies exactly as the nearest
  class mean; several classes: nearest class mean, ``logit_c = mu_c . x - |mu_c|^2 / 2``
  (scikit-learn's ``NearestCentroid``).

Two exact reformulations make the batched solve cheap and well conditioned. Features are centred on their mean over
all rows (only the unpenalised intercept changes). When a site has more features than rows, ``X = R^T Q^T`` (a QR
of ``X^T``) and the problem is solved for ``v`` in ``W = Q v``: the L2 penalty is rotation invariant and the data
term sees only ``X Q``, so the minimiser is the same. Logistic problems run a batched L-BFGS (Nocedal & Wright
2006, Alg. 7.4) whose initial inverse Hessian is Böhning's (1992) bound ``(c X^T X / n + lambda I)^-1``
(``c = 1/4`` binary, ``1/2`` softmax), with a backtracking Armijo line search per problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FAMILIES", "BatchedFit", "fit_batched", "decision_batched"]

FAMILIES = ("logistic", "ridge", "mass_mean")
_REFRESH = (5, 10)  # L-BFGS iterations at which the preconditioner becomes the Hessian at the current point
_FTOL = 64 * torch.finfo(torch.float64).eps  # scikit-learn's lbfgs ftol: a smaller relative decrease ends a problem


@dataclass(frozen=True)
class BatchedFit:
    """Fitted probes for every (site, fold, label set)."""

    family: str
    """``logistic``, ``ridge`` or ``mass_mean``."""
    W: Tensor
    """Weights ``[site, F, L, d, k]`` in the original feature coordinates."""
    b: Tensor
    """Intercepts ``[site, F, L, k]``."""
    converged: Tensor
    """``[site, F, L]``: True where the solver met its tolerance (always True for the closed forms)."""
    n_iter: int
    """Solver iterations (0 for the closed forms)."""


def decision_batched(X: Tensor, fit: BatchedFit) -> Tensor:
    """Decision values ``[site, row, F, L, k]`` of every fitted probe on every row of ``X [site, row, d]``."""
    S, n, d = X.shape
    _, F, L, _, k = fit.W.shape
    W = fit.W.permute(0, 3, 1, 2, 4).reshape(S, d, F * L * k)
    out = torch.bmm(X.to(fit.W.dtype), W).view(S, n, F, L, k)
    return out + fit.b[:, None]


def fit_batched(X: Tensor, Y: Tensor, train: Tensor, family: str, *, n_classes: int | None = None, C: float = 1.0,
                alpha: float = 1.0, max_iter: int = 500, tol: float = 1e-6, history: int = 10,
                dtype: torch.dtype = torch.float64) -> BatchedFit:
    """Fit ``family`` for every site of ``X [S, n, d]``, label set of ``Y [L, n]`` (integer classes ``0..K-1``;
    floats for ridge) and training mask of ``train [F, n]`` (bool) in one batched solve.

    ``C`` (logistic) and ``alpha`` (ridge) are scikit-learn's regularisation parameters; ``tol`` bounds the largest
    gradient entry of the (mean-loss) logistic objective, as scikit-learn's lbfgs ``tol`` does.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    if X.ndim != 3 or Y.ndim != 2 or train.ndim != 2 or Y.shape[1] != X.shape[1] or train.shape[1] != X.shape[1]:
        raise ValueError(f"expected X [S, n, d], Y [L, n], train [F, n]; got {tuple(X.shape)}, {tuple(Y.shape)}, "
                         f"{tuple(train.shape)}")
    if not X.is_floating_point() or not bool(torch.isfinite(X).all()):
        raise ValueError("X must hold finite floating-point features (found nan/inf or an integer dtype)")
    train = train.bool()
    if bool((train.sum(1) < 2).any()):
        raise ValueError("every training mask needs at least 2 rows")
    Xd = X.to(dtype)
    mu = Xd.mean(1, keepdim=True)
    Xc = Xd - mu
    if family == "mass_mean":
        W, b = _mass_mean(Xc, Y, train, _classes(Y, n_classes))
        conv, it = torch.ones(W.shape[:3], dtype=torch.bool), 0
    else:
        S, n, d = Xc.shape
        Q = None
        if d > n:  # exact: solve in the row space of X (the penalty is rotation invariant)
            Q, R = torch.linalg.qr(Xc.transpose(1, 2))  # Q [S, d, n], R [S, n, n]
            Z = R.transpose(1, 2)
        else:
            Z = Xc
        if family == "ridge":
            if not alpha > 0 or alpha == float("inf"):
                raise ValueError(f"alpha must be a positive finite number; got {alpha}")
            W, b = _ridge(Z, Y.to(dtype), train, float(alpha))
            conv, it = torch.ones(W.shape[:3], dtype=torch.bool), 0
        else:
            W, b, conv, it = _logistic(Z, Y.long(), train, _classes(Y, n_classes), float(C), max_iter, tol, history)
        if Q is not None:
            _, F, L, _, k = W.shape
            W = torch.bmm(Q, W.permute(0, 3, 1, 2, 4).reshape(S, n, F * L * k)).view(S, d, F, L, k)
            W = W.permute(0, 2, 3, 1, 4)
    b = b - torch.einsum("sd,sfldk->sflk", mu[:, 0], W)
    return BatchedFit(family, W.contiguous(), b.contiguous(), conv, it)


def _classes(Y: Tensor, n_classes: int | None) -> int:
    if Y.is_floating_point():
        raise ValueError("class labels must be integers 0..n_classes-1")
    k = int(Y.max()) + 1 if n_classes is None else int(n_classes)
    if int(Y.min()) < 0 or int(Y.max()) >= k or k < 2:
        raise ValueError(f"class labels must lie in 0..{k - 1} with at least 2 classes")
    return k


def _gram(Z1: Tensor) -> Tensor:
    return torch.bmm(Z1.transpose(1, 2), Z1)


def _with_ones(Z: Tensor) -> Tensor:
    return torch.cat([Z, Z.new_ones(*Z.shape[:2], 1)], dim=2)


def _ridge(Z: Tensor, Y: Tensor, train: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Closed form per fold: ``(Z~^T M Z~ + alpha I') theta = Z~^T M y`` with an unpenalised intercept row."""
    S, n, p = Z.shape
    F, L = train.shape[0], Y.shape[0]
    Z1 = _with_ones(Z)
    pen = torch.full((p + 1,), alpha, dtype=Z.dtype)
    pen[p] = 0.0
    theta = Z.new_empty(S, F, L, p + 1)
    full = _gram(Z1)
    for f in range(F):
        m = train[f]
        out = ~m
        G = full - _gram(Z1[:, out]) if int(out.sum()) < int(m.sum()) else _gram(Z1[:, m])
        G = G + torch.diag(pen)
        rhs = torch.bmm(Z1[:, m].transpose(1, 2), Y[:, m].T.expand(S, -1, -1))  # [S, p+1, L]
        chol, info = torch.linalg.cholesky_ex(G)
        if bool((info != 0).any()):
            theta[:, f] = torch.linalg.solve(G, rhs).transpose(1, 2)
        else:
            theta[:, f] = torch.cholesky_solve(rhs, chol).transpose(1, 2)
    return theta[..., :p, None], theta[..., p:]


def _mass_mean(Xc: Tensor, Y: Tensor, train: Tensor, k: int) -> tuple[Tensor, Tensor]:
    S, n, d = Xc.shape
    F, L = train.shape[0], Y.shape[0]
    onehot = torch.nn.functional.one_hot(Y.long(), k).to(Xc.dtype)             # [L, n, k]
    weights = train.to(Xc.dtype)[:, None, :, None] * onehot[None]              # [F, L, n, k]
    counts = weights.sum(2)                                                    # [F, L, k]
    sums = torch.bmm(Xc.transpose(1, 2), weights.permute(2, 0, 1, 3).reshape(n, F * L * k).expand(S, -1, -1))
    means = (sums.view(S, d, F, L, k) / counts.clamp_min(1)).permute(0, 2, 3, 1, 4)   # [S, F, L, d, k]
    absent = (counts == 0)[None]                                               # [1, F, L, k]
    if k == 2:
        W = (means[..., 1] - means[..., 0])[..., None]
        b = -(W[..., 0] * (means[..., 0] + means[..., 1]) / 2).sum(-1, keepdim=True)
        one = absent.any(-1, keepdim=True)       # a training set with one class: always predict that class
        W = torch.where(one[..., None, :], torch.zeros_like(W), W)
        b = torch.where(one, torch.where(absent[..., :1], 1.0, -1.0).to(b.dtype), b)
    else:
        W = torch.where(absent[..., None, :], torch.zeros_like(means), means)
        b = torch.where(absent, float("-inf"), -0.5 * means.pow(2).sum(3))
    return W, b


def _logistic(Z: Tensor, Y: Tensor, train: Tensor, k: int, C: float, max_iter: int, tol: float,
              history: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """Batched L-BFGS on the scaled logistic objective. The initial inverse Hessian starts as Böhning's bound and
    is replaced at iterations :data:`_REFRESH` by the inverse Hessian at the current point, one per (site, label
    set) with the curvature averaged over folds (and classes): near-Newton steps where the bound is loose (well
    separated classes), at the cost of one weighted Gram matrix per refresh."""
    if not (C > 0 and C != float("inf")):
        raise ValueError(f"C must be a positive finite number (inverse regularisation strength); got {C}: without a "
                         "penalty the objective has no minimiser on separable data")
    S, n, p = Z.shape
    F, L = train.shape[0], Y.shape[0]
    P, K = F * L, (1 if k == 2 else k)
    Z1 = _with_ones(Z)
    dt = Z.dtype
    m = train.to(dt)[:, None, :].expand(F, L, n).reshape(P, n)                 # row weights per problem
    n_p = m.sum(1)                                                             # [P]
    lam = 1.0 / (C * n_p)                                                      # [P]
    scale = (m / n_p[:, None]).T                                               # [n, P]
    y = Y[None].expand(F, L, n).reshape(P, n).T                                # [n, P]
    target = y.to(dt)[..., None] if K == 1 else torch.nn.functional.one_hot(y, k).to(dt)  # [n, P, K]
    # A training set missing a class (a control task can draw one) has no finite minimiser with a free intercept:
    # those problems (and only those) also penalise the intercept, which keeps the absent class's logit finite.
    per_class = torch.einsum("pn,npk->pk", m, torch.nn.functional.one_hot(y, k).to(dt))
    lam_b = torch.where((per_class == 0).any(1), lam, torch.zeros_like(lam))  # [P]

    def logits(V: Tensor) -> Tensor:
        return torch.bmm(Z1, V.view(S, p + 1, P * K)).view(S, n, P, K)

    def value_grad(V: Tensor) -> tuple[Tensor, Tensor]:
        z = logits(V)
        if K == 1:
            loss = torch.nn.functional.softplus(z) - target * z
            dz = torch.sigmoid(z) - target
        else:
            lse = torch.logsumexp(z, -1, keepdim=True)
            loss = lse - (target * z).sum(-1, keepdim=True)
            dz = torch.exp(z - lse) - target
        f = (loss.sum(-1) * scale).sum(1)                                      # [S, P]
        g = torch.bmm(Z1.transpose(1, 2), (dz * scale[..., None]).view(S, n, P * K)).view(S, p + 1, P, K)
        Wpart, bpart = V[:, :p], V[:, p:]
        f = f + 0.5 * lam * Wpart.pow(2).sum((1, 3)) + 0.5 * lam_b * bpart.pow(2).sum((1, 3))
        g = torch.cat([g[:, :p] + lam[None, None, :, None] * Wpart, g[:, p:] + lam_b[None, None, :, None] * bpart],
                      dim=1)
        return f, g

    def inverse_hessians(weights: Tensor) -> list[Tensor]:
        """``(Z~^T diag(w_l) Z~ + lambda I')^-1`` per label set, for row weights ``weights [S, n, L]``."""
        out = []
        for l_ in range(L):
            H = torch.bmm(Z1.transpose(1, 2), Z1 * weights[:, :, l_, None])
            H.diagonal(dim1=1, dim2=2)[:, :p] += float(lam.mean())
            out.append(torch.cholesky_inverse(torch.linalg.cholesky(H)))  # applied as products: faster than solves
        return out

    def precondition(q: Tensor) -> Tensor:
        q5 = q.view(S, p + 1, F, L, K)
        out = torch.empty_like(q5)
        for l_ in range(L):
            out[:, :, :, l_] = torch.bmm(Binv[l_], q5[:, :, :, l_].reshape(S, p + 1, F * K)).view(S, p + 1, F, K)
        return out.view(S, p + 1, P, K)

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum((1, 3))                                             # [S, P]

    bound = 0.25 if K == 1 else 0.5                                            # Böhning (1992)
    Binv = inverse_hessians(torch.full((S, n, L), bound / n, dtype=dt))
    V = Z.new_zeros(S, p + 1, P, K)
    f, g = value_grad(V)
    done = g.abs().amax((1, 3)) <= tol
    stalled = torch.zeros_like(done)
    hist: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    it = 0
    while it < max_iter and not bool((done | stalled).all()):
        it += 1
        active = ~(done | stalled)
        if it in _REFRESH:
            z = logits(V)
            pr = torch.sigmoid(z) if K == 1 else torch.softmax(z, -1)
            curv = (pr * (1 - pr)).mean(-1) * scale                           # [S, n, P]
            Binv = inverse_hessians(curv.view(S, n, F, L).mean(2))
            hist.clear()
        q = g.clone()
        alphas = []
        for s_i, y_i, _, rho_i in reversed(hist):
            a = rho_i * dot(s_i, q)
            alphas.append(a)
            q -= a[:, None, :, None] * y_i
        r = precondition(q)
        if hist:   # scale by the newest curvature pair (Nocedal & Wright eq. 7.20, in the preconditioned metric)
            s_i, y_i, My_i, rho_i = hist[-1]
            gamma = dot(s_i, y_i) / dot(y_i, My_i).clamp_min(1e-300)
            r = r * torch.where(rho_i > 0, gamma, 1.0).clamp(1e-3, 1e3)[:, None, :, None]
        for (s_i, y_i, _, rho_i), a in zip(hist, reversed(alphas)):
            beta = rho_i * dot(y_i, r)
            r += (a - beta)[:, None, :, None] * s_i
        D = -r * active[:, None, :, None]
        slope = dot(g, D)
        bad = (slope >= 0) & active        # not a descent direction (should not happen): a step on the bound
        if bool(bad.any()):
            D = torch.where(bad[:, None, :, None], -precondition(g), D) * active[:, None, :, None]
            slope = dot(g, D)
        t = torch.ones_like(f)
        for _ in range(40):
            V_try = V + t[:, None, :, None] * D
            f_try, g_try = value_grad(V_try)
            ok = (f_try <= f + 1e-4 * t * slope) | ~active
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        fail = ~ok
        if bool(fail.any()):   # no decrease found: these problems stop where they are
            stalled |= fail
            keep = fail[:, None, :, None]
            V_try, g_try, f_try = torch.where(keep, V, V_try), torch.where(keep, g, g_try), torch.where(fail, f, f_try)
        s_new, y_new = V_try - V, g_try - g
        sy = dot(s_new, y_new)
        rho = torch.where(sy > 1e-16 * dot(y_new, y_new).sqrt() * dot(s_new, s_new).sqrt(), 1.0 / sy, 0.0)
        hist.append((s_new, y_new, precondition(y_new), torch.nan_to_num(rho)))
        if len(hist) > history:
            hist.pop(0)
        small = (f - f_try) <= _FTOL * torch.maximum(f.abs(), f_try.abs()).clamp_min(1.0)
        V, f, g = V_try, f_try, g_try
        done = (g.abs().amax((1, 3)) <= tol) | (small & active & ~fail)
    W = V[:, :p].view(S, p, F, L, K).permute(0, 2, 3, 1, 4)
    b = V[:, p].view(S, F, L, K)
    return W, b, done.view(S, F, L), it
